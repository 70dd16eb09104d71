"""The run summary: the report's figures a line per source, stored with the report at
``ledger/summary/run=<R>.json``, and the view ``apilake_runs`` over every run's (Athena SQL, run in DuckDB)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlglot
from sqlglot import exp

from apilake import curated
from apilake.drift import ChangedField, SourceDrift
from apilake.ledger import Ledger, RunManifest
from apilake.report import RunReport, build_report, report_keys, store_report, stored_report, write_report
from apilake.run_summary import SourceSummary, glue_columns, glue_type, summaries, summary_body, summary_key
from apilake_dev.sql import ATHENA
from tests.unit.test_report import MANIFEST, NOW, RUN, puts, run_ledger  # noqa: F401 - run_ledger: the fixture "ledger"
from tests.unit.test_sql import land, rows

MANUAL = "manual-20261127T090000Z"


def stored_lines(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    body = ledger.client.get_object(Bucket=ledger.bucket, Key=summary_key(run_id))["Body"].read().decode()
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def test_the_summary_is_written_with_the_report_a_line_per_source(ledger: Ledger) -> None:
    # When the report is written (api-a's DLQ holds a message, api-c's depth is unknown)
    report = write_report(ledger, MANIFEST, {"api-a": 1, "api-b": 0}, NOW)
    # Then the summary is beside the other ledgers' objects, a line per source in the report's order
    assert summary_key(RUN) == f"ledger/summary/run={RUN}.json"
    lines = stored_lines(ledger, RUN)
    assert [line["source"] for line in lines] == ["api-a", "api-b", "api-c"]
    # And each line has the source's figures as the report has them, the run's with them
    a = SourceSummary.model_validate(lines[0])
    assert (a.run_id, a.trigger, a.ingestion_date, a.created_at, a.generated_at) == (
        RUN,
        "schedule",
        date(2026, 11, 26),
        datetime(2026, 11, 26, 1, 0),
        NOW.replace(tzinfo=None),
    )
    assert (a.complete, a.run_complete, a.pages_expected, a.pages_landed, a.pages_missing, a.records, a.bytes) == (
        False,
        False,
        3,
        2,
        1,
        14,
        1400,
    )
    assert (a.requests, a.retries, a.throttled, a.parked_pages, a.parks, a.dlq_depth) == (4, 2, 2, 1, 2, 1)
    assert (a.latency_ms_p50, a.latency_ms_p90, a.latency_ms_p99, a.schema_drift_fields) == (100.0, 116.0, 119.6, None)
    c = SourceSummary.model_validate(lines[2])
    assert (c.pages_expected, c.dlq_depth, c.latency_ms_p50) == (None, None, 40.0)
    # And every figure the line shares with the report is the report's
    for line, source in zip(lines, report.sources, strict=True):
        shared = json.loads(source.model_dump_json(include=set(line) & set(type(source).model_fields)))
        assert shared == {name: line[name] for name in shared}, source.source
    assert stored_report(ledger, RUN) == report


def test_times_are_utc_in_the_form_athena_reads_as_timestamps(ledger: Ledger) -> None:
    # Given a report generated at 08:00 in UTC+1
    report = build_report(
        ledger, MANIFEST, None, datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    )
    # Then its summary says 07:00 UTC, to the millisecond, as java.sql.Timestamp writes it
    [line, *_] = summary_body(report).splitlines()
    assert json.loads(line)["generated_at"] == "2026-11-26 07:00:00.123"
    assert json.loads(line)["created_at"] == "2026-11-26 01:00:00.000"


def test_the_summary_is_rewritten_only_when_the_report_is(ledger: Ledger) -> None:
    # Given the run's report and summary stored
    write_report(ledger, MANIFEST, {"api-a": 1}, NOW)
    keys = puts(ledger)
    # When it is built again later with the same figures: nothing is put
    assert not store_report(
        ledger, build_report(ledger, MANIFEST, {"api-a": 1}, NOW + timedelta(hours=1)), stored_report(ledger, RUN)
    )
    assert keys == []
    # When a figure changed: the HTML, the summary, then the JSON that vouches for both
    changed = build_report(ledger, MANIFEST, {"api-a": 2}, NOW)
    assert store_report(ledger, changed, stored_report(ledger, RUN))
    json_key, html_key = report_keys(RUN)
    assert keys == [html_key, summary_key(RUN), json_key]
    assert stored_lines(ledger, RUN)[0]["dlq_depth"] == 2


def drift(observed: int, new: int, changed: int) -> SourceDrift:
    return SourceDrift(
        pages_observed=observed,
        pages_unobserved=0,
        records_observed=0,
        observed={},
        new={f"new_{n}": ["string"] for n in range(new)},
        missing={},
        changed=[ChangedField(field=f"changed_{n}", declared="bigint", seen=["string"]) for n in range(changed)],
    )


@pytest.mark.parametrize(
    ("source_drift", "fields"),
    [(None, None), (drift(0, 0, 0), None), (drift(2, 0, 0), 0), (drift(2, 1, 1), 2)],
    ids=["no columns", "fields not noted", "no drift", "a new and a changed field"],
)
def test_schema_drift_fields_is_the_completeness_metrics_count_or_null(
    ledger: Ledger, source_drift: SourceDrift | None, fields: int | None
) -> None:
    report = build_report(ledger, MANIFEST, None, NOW)
    report.sources[0].drift = source_drift
    assert summaries(report)[0].schema_drift_fields == fields


def test_the_glue_columns_are_the_summary_fields_with_their_types() -> None:
    columns = dict(glue_columns())
    assert list(columns) == list(SourceSummary.model_fields)
    assert {name: columns[name] for name in ("run_id", "trigger", "ingestion_date", "created_at", "complete")} == {
        "run_id": "string",
        "trigger": "string",
        "ingestion_date": "date",
        "created_at": "timestamp",
        "complete": "boolean",
    }
    assert (columns["records"], columns["dlq_depth"], columns["latency_ms_p99"]) == ("bigint", "bigint", "double")


@pytest.mark.parametrize("annotation", [list[str], dict[str, int], bytes, int | str, Literal["a", 1]])
def test_a_field_without_a_glue_type_is_refused(annotation: object) -> None:
    with pytest.raises(TypeError, match="no Glue type for"):
        glue_type(annotation)


# -- the view over every run ---------------------------------------------------------------------------------
def test_the_runs_view_is_athena_sql_over_the_summary_table() -> None:
    statement = sqlglot.parse_one(curated.create_runs_view(), read=ATHENA)
    assert isinstance(statement, exp.Create) and statement.kind == "VIEW" and statement.args.get("replace")
    assert statement.this.name == curated.RUNS_VIEW == "apilake_runs"
    assert [t.name for t in statement.find_all(exp.Table) if t is not statement.this] == [curated.RUN_SUMMARY_TABLE]
    assert statement.expression.named_selects == [*SourceSummary.model_fields, curated.RUN_RANK]


def two_runs(ledger: Ledger) -> list[RunReport]:
    """The scheduled run, then a manual run of api-b the next day."""
    manual = RunManifest(
        run_id=MANUAL,
        ingestion_date=date(2026, 11, 27),
        created_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
        trigger="manual",
        sources={"api-b": MANIFEST.sources["api-b"]},
    )
    ledger.write_manifest(manual)
    return [build_report(ledger, manifest, {"api-a": 1}, NOW) for manifest in (MANIFEST, manual)]


def test_the_runs_view_gives_every_run_and_source_newest_first_in_duckdb(ledger: Ledger, tmp_path: Path) -> None:
    # Given a lake folder with a page and two runs' summaries, as `apilake demo` leaves it
    land(tmp_path, "api-b", date(2026, 11, 26), [{"id": 1}])
    for report in two_runs(ledger):
        path = tmp_path / summary_key(report.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary_body(report))
    # When apilake_runs is queried locally
    found = rows(tmp_path, "SELECT * FROM apilake_runs")
    # Then there is a row per run and source, the newest run first, with the summary's columns and figures
    assert [(row["run_id"], row["source"], row["complete"], row["run_complete"]) for row in found] == [
        (MANUAL, "api-b", False, False),  # nothing landed yet
        (RUN, "api-a", False, False),
        (RUN, "api-b", True, False),
        (RUN, "api-c", False, False),
    ]
    assert list(found[0]) == [*SourceSummary.model_fields, curated.RUN_RANK]
    # And run_rank is 1 for each source's newest run, which stays right under another query's ORDER BY
    assert [row["run_rank"] for row in found] == [1, 1, 2, 1]
    latest = rows(tmp_path, "SELECT run_id, source FROM apilake_runs WHERE run_rank = 1 ORDER BY source")
    assert [(row["run_id"], row["source"]) for row in latest] == [(RUN, "api-a"), (MANUAL, "api-b"), (RUN, "api-c")]
    # And each row is its summary line, every figure as written (times in UTC)
    written = {
        (line.run_id, line.source): line
        for run in (MANUAL, RUN)
        for line in map(SourceSummary.model_validate_json, (tmp_path / summary_key(run)).read_text().splitlines())
    }
    summarized = [
        SourceSummary.model_validate({k: v for k, v in row.items() if k != curated.RUN_RANK}) for row in found
    ]
    assert summarized == [written[row["run_id"], row["source"]] for row in found]
    assert (found[1]["records"], found[1]["latency_ms_p99"], found[1]["dlq_depth"], found[3]["dlq_depth"]) == (
        14,
        119.6,
        1,
        None,
    )
    # And the summary table has the Glue table's types
    described = rows(tmp_path, "DESCRIBE run_summary")
    assert [(row["column_name"], row["column_type"]) for row in described] == [
        (name, {"string": "VARCHAR"}.get(glue, glue.upper())) for name, glue in glue_columns()
    ]


def test_before_any_summary_the_runs_view_is_empty(tmp_path: Path) -> None:
    land(tmp_path, "api-b", date(2026, 11, 26), [{"id": 1}])
    assert rows(tmp_path, "SELECT * FROM apilake_runs") == []
    described = [row["column_name"] for row in rows(tmp_path, "DESCRIBE apilake_runs")]
    assert described == [*SourceSummary.model_fields, curated.RUN_RANK]
