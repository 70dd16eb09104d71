"""Schema drift: the worker notes each top-level field's JSON kinds as a page is encoded; a run's fields are
compared with the source's declared columns (new, missing, changed type) in the run report, in ``apilake
status`` and in the completeness check's ``schema_drift_fields``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.completeness import CompletenessCheck
from apilake.config import ColumnType, Source, SourcesFile, parse_sources
from apilake.drift import FITS, compare, merge_fields, rejudge, run_drift, source_drift, text_kinds
from apilake.incremental import HighWater
from apilake.lake import encode_page
from apilake.ledger import LandedPage, Ledger
from apilake.records import LAZY_ABOVE_BYTES, FieldKinds, LazyRecords, parse_document
from apilake.report import build_report, render_html
from apilake_cli.output import print_status, status_document
from tests.unit import fakes
from tests.unit.fakes import Worker, document, item
from tests.unit.test_completeness import BUCKET, NIGHT, NOW, STAGE, Lake, emitted, fanout

COLUMNS = {"id": "bigint", "name": "string", "price": "double", "updated_at": "timestamp"}


def sources(columns: dict[str, str] | None = COLUMNS, **extra: Any) -> SourcesFile:
    source = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "records_path": "data",
        "pagination": {"type": "single"},
        **({} if columns is None else {"columns": columns}),
        **extra,
    }
    return parse_sources({"version": 1, "sources": [source]}, "sources.yaml")


def source(columns: dict[str, str] | None = COLUMNS) -> Source:
    return sources(columns).get("api-x")


def observe(records: list[Any], columns: dict[str, str] | None = COLUMNS) -> dict[str, list[str]]:
    """The fields the worker notes of a page of ``records`` of a source with ``columns`` (as the lake writer
    encodes it)."""
    kinds = FieldKinds(records, text_kinds(source(columns).columns))
    encode_page(kinds)
    return kinds.fields


# -- what the worker notes ---------------------------------------------------------------------------------


def test_each_top_level_field_s_kinds_are_noted_as_the_page_is_encoded() -> None:
    # Given a page whose records vary: every JSON kind, a field null in one record, a record that is no object
    records = [
        {"id": 1, "name": "a", "price": 1.5, "ok": True, "tags": ["x"], "meta": {"a": 1}, "gone": None},
        {"id": "2", "name": None, "price": 2, "ok": False, "tags": [], "meta": {}},
        "not an object",
    ]
    kinds = FieldKinds(records)
    # When it is not read yet, nothing is noted; when the writer encodes it, every top-level field is
    assert kinds.fields == {}
    digest, _ = encode_page(kinds)
    # Then the kinds come in one order, nested fields are not looked into, and the page encodes as it is
    assert kinds.fields == {
        "id": ["string", "integer"],
        "name": ["string", "null"],
        "price": ["integer", "number"],
        "ok": ["boolean"],
        "tags": ["array"],
        "meta": ["object"],
        "gone": ["null"],
    }
    assert digest == encode_page(records)[0] and len(kinds) == 3 and kinds[2] == "not an object"


def test_a_large_page_s_lazy_records_are_observed_under_the_high_water_mark_in_one_pass() -> None:
    # Given a page over the lazy threshold, of an incremental source with columns
    body = json.dumps({"data": [{"id": n, "updated": n, "pad": "x" * 200} for n in range(6000)]}).encode()
    assert len(body) > LAZY_ABOVE_BYTES
    records = parse_document(body, "data")["data"]
    assert isinstance(records, LazyRecords)
    config = sources(incremental={"cursor_path": "updated", "param": "since", "initial_value": 0, "format": "number"})
    incremental = config.get("api-x").incremental
    assert incremental is not None
    kinds = FieldKinds(records)
    high = HighWater(kinds, incremental)
    # When the writer encodes it through both
    encode_page(high)
    # Then both noted what they watch
    assert kinds.fields == {"id": ["integer"], "updated": ["integer"], "pad": ["string"]}
    assert high.highest == 5999


@pytest.mark.parametrize(
    ("declared", "value", "kind"),
    [
        # the shapes apilake.curated casts (tests/unit/test_curated.py: the same values in DuckDB): the kind fits
        ("timestamp", "2026-11-26T13:00:05Z", "timestamp"),
        ("timestamp", "2026-11-26 13:00:05+02:00", "timestamp"),
        ("timestamp", "2026-11-26T13:00:05.123456-05:30", "timestamp"),
        ("timestamp", "2026-11-26 13:00:05", "timestamp"),
        ("date", "2026-11-26", "date"),
        ("bigint", "9223372036854775807", "integer"),
        ("bigint", "-7", "integer"),
        # the others are NULL in the curated table: a string, which a timestamp, date or bigint does not fit
        ("timestamp", "26/11/2026 13:00", "string"),
        ("timestamp", "2026-11-26 13:00:05 UTC", "string"),
        ("timestamp", " 2026-11-26T13:00:05Z", "string"),
        ("timestamp", "2026-11-26T24:00:00Z", "string"),
        ("timestamp", "2026-11-26T13", "string"),
        ("timestamp", "2026-11-26T13:00:05Z\n", "string"),
        ("timestamp", "2026-11-26", "string"),
        ("date", "26/11/2026", "string"),
        ("date", "2026-11-26T00:00:00Z", "string"),
        ("bigint", "12345678901234567890", "string"),
        ("bigint", "7.0", "string"),
        ("string", "2026-11-26", "string"),  # a string column's strings are not looked into
    ],
)
def test_a_declared_timestamp_date_or_bigint_s_strings_are_noted_by_the_curation_s_shape(
    declared: str, value: str, kind: str
) -> None:
    # Given a page of a field declared so, with the value as a string and a null
    noted = observe([{"f": value}, {"f": None}], {"f": declared})
    # Then the string's kind is the type's when the curation casts it, else string, which the type does not fit
    assert noted == {"f": [kind, "null"]}
    assert (kind in FITS[ColumnType(declared)]) is (kind != "string" or declared == "string")


def test_a_changed_date_format_is_drift() -> None:
    # Given a date field whose vendor switched to day/month/year in some records
    observed = observe([{"day": "2026-11-26"}, {"day": "27/11/2026"}], {"day": "date"})
    # Then the drift says the type changed (the curated column is NULL for those records)
    drift = compare({"day": ColumnType.DATE}, observed, records=2, pages_observed=1)
    assert [(c.field, c.declared, c.seen) for c in drift.changed] == [("day", "date", ["string", "date"])]


# -- the comparison ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "new", "missing", "changed"),
    [
        pytest.param(
            {"id": ["integer"], "name": ["string"], "price": ["number"], "updated_at": ["timestamp"]},
            {},
            {},
            [],
            id="as declared",
        ),
        pytest.param(
            {"id": ["integer"], "name": ["integer", "null"], "price": ["integer"], "updated_at": ["timestamp", "null"]},
            {},
            {},
            [],
            id="kinds the types hold: a number as string, an integer as double, nulls",
        ),
        pytest.param(
            {
                "id": ["integer"],
                "name": ["string"],
                "price": ["number"],
                "updated_at": ["timestamp"],
                "tags": ["array"],
            },
            {"tags": ["array"]},
            {},
            [],
            id="a new field",
        ),
        pytest.param(
            {"id": ["integer"], "name": ["string"], "price": ["number"], "updated_at": ["timestamp"], "x": ["null"]},
            {},
            {},
            [],
            id="an undeclared field seen null only: not new (no value, no type)",
        ),
        pytest.param(
            {"id": ["string"], "name": ["string"], "price": ["number"], "updated_at": ["timestamp"]},
            {},
            {},
            [("id", "bigint", ["string"])],
            id="bigint seen as string",
        ),
        pytest.param(
            {"id": ["integer", "number"], "name": ["object"], "price": ["boolean"], "updated_at": ["integer"]},
            {},
            {},
            [
                ("id", "bigint", ["integer", "number"]),
                ("name", "string", ["object"]),
                ("price", "double", ["boolean"]),
                ("updated_at", "timestamp", ["integer"]),
            ],
            id="changed types, on some pages only",
        ),
        pytest.param(
            {"id": ["integer"], "name": ["null"], "price": ["number"]},
            {},
            {"name": "string", "updated_at": "timestamp"},
            [],
            id="missing: absent, or null only",
        ),
    ],
)
def test_a_run_s_fields_are_compared_with_the_declared_columns(
    observed: dict[str, list[str]],
    new: dict[str, list[str]],
    missing: dict[str, str],
    changed: list[tuple[str, str, list[str]]],
) -> None:
    drift = compare(source().columns or {}, observed, records=10, pages_observed=2)
    assert drift.new == new
    assert drift.missing == missing
    assert [(c.field, c.declared, c.seen) for c in drift.changed] == changed
    assert drift.fields == len(new) + len(missing) + len(changed)


@pytest.mark.parametrize("kinds", [["object"], ["array"], ["string", "integer", "null"], ["boolean"]])
def test_a_json_column_holds_any_kind(kinds: list[str]) -> None:
    assert compare({"payload": ColumnType.JSON}, {"payload": kinds}, records=1, pages_observed=1).fields == 0


def test_a_run_that_landed_no_record_misses_no_field() -> None:
    drift = compare(source().columns or {}, {}, records=0, pages_observed=1)
    assert (drift.judged, drift.fields, drift.missing) == (True, 0, {})


def test_pages_merge_their_kinds() -> None:
    pages = [{"id": ["integer"], "a": ["null"]}, {"id": ["string"], "b": ["object"]}, {}]
    assert merge_fields(pages) == {"id": ["string", "integer"], "a": ["null"], "b": ["object"]}


@pytest.mark.parametrize(
    ("pages", "judged", "fields", "unobserved"),
    [
        pytest.param([LandedPage(records=3)], False, 0, 1, id="old markers without fields: not judged"),
        pytest.param(
            [LandedPage(records=3), LandedPage(records=2, fields={"id": ["string"]})],
            True,
            4,  # id changed; name, price, updated_at missing
            1,
            id="old and new markers: the new ones judged",
        ),
        pytest.param([], False, 0, 0, id="nothing landed"),
    ],
)
def test_pages_landed_before_the_worker_noted_fields_are_counted_not_judged(
    pages: list[LandedPage], judged: bool, fields: int, unobserved: int
) -> None:
    drift = source_drift(source(), pages)
    assert drift is not None
    assert (drift.judged, drift.fields, drift.pages_unobserved) == (judged, fields, unobserved)
    assert drift.judged or (drift.new, drift.missing, drift.changed) == ({}, {}, [])


def test_a_source_without_columns_has_no_drift() -> None:
    assert source_drift(source(None), [LandedPage(records=1, fields={"id": ["integer"]})]) is None
    assert source_drift(None, []) is None


def test_drift_accepted_in_the_columns_is_no_longer_drift() -> None:
    # Given a run whose records had a new field and a changed type
    observed = {
        "id": ["string"],
        "name": ["string"],
        "price": ["number"],
        "updated_at": ["timestamp"],
        "tags": ["array"],
    }
    drift = source_drift(source(), [LandedPage(records=5, fields=observed)])
    assert drift is not None and drift.fields == 2
    # When the columns are changed to what the vendor sends now
    accepted = source({**COLUMNS, "id": "string", "tags": "json"})
    # Then judged again, nothing drifts
    again = rejudge(accepted, drift)
    assert again is not None and again.fields == 0 and again.observed == observed


# -- a run where the vendor changed its records: the report, status and the metric ------------------------------

RUN_1 = "sched-20261125T010000Z"
RUN_2 = "sched-20261126T010000Z"
BEFORE = [{"id": 1, "name": "a", "price": 1.5, "updated_at": "2026-11-24T10:00:00Z"}]
# The vendor added "tags" and now sends ids as text that is no integer; "name" is null on every record
AFTER = [
    {"id": "x-2", "name": None, "price": 2.0, "updated_at": "2026-11-25T10:00:00Z", "tags": ["new"]},
    {"id": "x-3", "name": None, "price": 3, "updated_at": "2026-11-25T11:00:00Z", "tags": []},
]


@pytest.fixture(name="lake")
def moto_lake() -> Iterator[Lake]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        lake = Lake(s3, boto3.client("sqs", region_name="us-east-1"), Ledger(s3, BUCKET))
        for run_id, records, created in ((RUN_1, BEFORE, NIGHT - timedelta(days=1)), (RUN_2, AFTER, NIGHT)):
            lake.run(run_id, created, {"api-x": fanout(1)})
            details = {"records": len(records), "bytes": 100, "fields": observe(records)}
            lake.ledger.mark_landed([(lake.item(run_id, "api-x", 1), details)])
        lake.dlq("api-x")
        yield lake


def test_a_vendor_s_new_field_and_changed_type_are_reported_between_runs(lake: Lake) -> None:
    config = sources()
    # When the reports of the two runs are built
    first, second = (
        build_report(lake.ledger, lake.ledger.read_manifest(run_id), {}, NOW, config)  # type: ignore[arg-type]
        for run_id in (RUN_1, RUN_2)
    )
    # Then the first run's records are as declared
    before = first.sources[0].drift
    assert before is not None and (before.judged, before.fields) == (True, 0)
    # And the second says the new field, the changed type and the field seen null only
    after = second.sources[0].drift
    assert after is not None
    assert after.new == {"tags": ["array"]}
    assert [(c.field, c.declared, c.seen) for c in after.changed] == [("id", "bigint", ["string"])]
    assert after.missing == {"name": "string"}
    assert (after.fields, after.records_observed, after.pages_observed) == (3, 2, 1)
    # And the HTML says so, in its drift section and in a warning on top
    html = render_html(second)
    assert 'id="drift"' in html and "Schema of <b>api-x</b> drifted: 3" in html
    assert '<code>tags</code></td><td class="hot">new</td>' in html
    assert "<td>bigint</td><td>string</td>" in html
    assert "as declared" in render_html(first)
    # And a report built without the sources file has no drift section
    plain = build_report(lake.ledger, lake.ledger.read_manifest(RUN_2), {}, NOW)  # type: ignore[arg-type]
    assert plain.sources[0].drift is None and 'id="drift"' not in render_html(plain)


def test_status_prints_the_drift_lines(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = lake.ledger.read_manifest(RUN_2)
    assert manifest is not None
    status = lake.ledger.status(manifest, details=True)
    drift = run_drift(status, sources())
    print_status(status, None, drift=drift)
    out = capsys.readouterr().out
    assert "    schema DRIFT: 3 field(s) not as columns declare (apilake schema infer --source api-x)" in out
    assert "      new field 'tags' (array): not in columns" in out
    assert "      field 'id' changed type: declared bigint, seen string" in out
    assert "      field 'name' missing: declared string, never seen with a value" in out
    document = status_document(status, None, drift)["sources"][0]["schema_drift"]
    assert (document["fields"], document["new"], document["missing"]) == (3, {"tags": ["array"]}, {"name": "string"})
    # And a source without columns has no drift, and prints none
    assert run_drift(status, sources(None)) == {}


def test_status_says_a_run_landed_before_fields_were_noted_is_not_observed(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "manual-old"
    lake.run(run_id, NIGHT, {"api-x": fanout(1)}, trigger="manual")
    lake.land(run_id, "api-x", [1])  # a marker as the worker wrote it before issue 14
    manifest = lake.ledger.read_manifest(run_id)
    assert manifest is not None
    status = lake.ledger.status(manifest, details=True)
    print_status(status, None, drift=run_drift(status, sources()))
    assert "    schema: not observed (1 page(s) landed before the worker noted fields)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("columns", "metric"),
    [
        pytest.param(COLUMNS, 3, id="drifted: new, changed and missing fields"),
        pytest.param({**COLUMNS, "id": "string", "tags": "json", "name": "json"}, 1, id="partly accepted"),
        pytest.param(
            {"id": "string", "price": "double", "updated_at": "timestamp", "tags": "json"}, 0, id="all accepted"
        ),
        pytest.param(None, None, id="no columns: no metric"),
    ],
)
def test_the_completeness_check_emits_the_drifted_fields(
    lake: Lake, capsys: pytest.CaptureFixture[str], columns: dict[str, str] | None, metric: int | None
) -> None:
    capsys.readouterr()
    check = CompletenessCheck(lake.ledger, sources(columns), lake.sqs, STAGE, timedelta(minutes=360))
    summary = check.check(NOW)
    (verdict,) = summary.sources
    assert (verdict.run_id, verdict.schema_drift_fields) == (RUN_2, metric)
    assert emitted(capsys.readouterr().out).get(("schema_drift_fields", "api-x")) == metric


def test_a_final_report_s_drift_is_judged_again_against_the_columns_as_they_are_now(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the run judged once (complete: its report is final, with the drift as the columns were)
    CompletenessCheck(lake.ledger, sources(), lake.sqs, STAGE, timedelta(minutes=360)).check(NOW)
    # When the drift is accepted in the columns and the check runs again
    accepted = sources({"id": "string", "price": "double", "updated_at": "timestamp", "tags": "json"})
    capsys.readouterr()
    summary = CompletenessCheck(lake.ledger, accepted, lake.sqs, STAGE, timedelta(minutes=360)).check(NOW)
    # Then the stored report is kept, and the metric says no drift
    assert summary.reports == [] and summary.sources[0].schema_drift_fields == 0
    assert emitted(capsys.readouterr().out)[("schema_drift_fields", "api-x")] == 0


# -- schema drift: the fields noted -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "fields"),
    [({"id": "bigint"}, {"id": ["integer"]}), (None, None)],
    ids=["a source with columns notes its fields", "a source without columns notes none"],
)
def test_a_landed_page_s_details_hold_its_top_level_fields_kinds(
    monkeypatch: pytest.MonkeyPatch, columns: dict[str, str] | None, fields: dict[str, list[str]] | None
) -> None:
    # Given the fan-out source, with or without declared columns
    document_ = fakes.SOURCES.model_dump(mode="json", exclude_defaults=True)
    for source in document_["sources"]:
        if columns is not None:
            source["columns"] = columns
    monkeypatch.setattr(fakes, "SOURCES", parse_sources(document_, "test"))
    worker = Worker("fan")
    worker.vendor.answer("page=2", document(2))
    # When its page lands
    assert worker.run(item("fan", 2)) == []
    # Then the ledger's details say the kinds of each top-level field (what apilake.drift compares), or nothing
    (((_, details),),) = worker.ledger.landed
    assert details.get("fields") == fields
