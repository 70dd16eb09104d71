"""The sources file: valid configs load, invalid ones fail with a message naming file, source and field."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import Budget, ColumnType, load_sources, parse_sources
from apilake.exceptions import ConfigError
from apilake.pagination_config import CursorPagination
from apilake_dev import paths

BASE: dict[str, Any] = {
    "name": "api-x",
    "base_url": "https://api.example.com",
    "path": "/v1/things",
    "records_path": "data",
    "pagination": {"type": "single"},
}


def doc(**overrides: Any) -> dict[str, Any]:
    source = copy.deepcopy(BASE)
    source.update(overrides)
    return {"version": 1, "sources": [source]}


VALID = [
    pytest.param(doc(), id="minimal single page"),
    pytest.param(
        doc(pagination={"type": "page_number", "page_size": 50, "total_path": "meta.total"}),
        id="page number with total",
    ),
    pytest.param(
        doc(pagination={"type": "page_number", "total_pages_path": "meta.pages"}), id="page number with page count"
    ),
    pytest.param(
        doc(pagination={"type": "page_number", "stop_on_short_page": False}), id="page number until empty page"
    ),
    pytest.param(doc(pagination={"type": "offset", "limit": 25, "total_path": "total"}), id="offset"),
    pytest.param(doc(pagination={"type": "cursor", "cursor_path": "next", "has_more_path": "more"}), id="cursor"),
    pytest.param(
        doc(
            pagination={
                "type": "cursor",
                "cursor_param": "starting_after",
                "cursor_from": "last_record",
                "cursor_field": "id",
                "has_more_path": "has_more",
            }
        ),
        id="cursor from the last record (Stripe)",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_from": "first_record", "cursor_field": "meta.key"}),
        id="cursor from the first record, nested field",
    ),
    pytest.param(doc(pagination={"type": "cursor", "cursor_from": "body", "cursor_path": "n"}), id="cursor from body"),
    pytest.param(doc(pagination={"type": "next_url", "next_url_path": "links.next"}), id="next url"),
    pytest.param(doc(pagination={"type": "link_header"}, records_path=""), id="link header, records at the root"),
    pytest.param(
        doc(sharding={"type": "daily", "start_param": "from", "end_param": "to", "lookback_days": 3}), id="daily"
    ),
    pytest.param(
        doc(auth={"type": "api_key", "secret_name": "apilake/x", "location": "query", "name": "key"}), id="key"
    ),
    pytest.param(doc(auth={"type": "bearer", "secret_name": "apilake/x", "secret_field": "token"}), id="bearer"),
    pytest.param(doc(base_url="http://127.0.0.1:8080"), id="plain http on loopback"),
    pytest.param(doc(budget={"requests_per_second": 50, "max_concurrency": 5}), id="budget"),
    pytest.param(
        doc(worker={"timeout_seconds": 900, "memory_mb": 1024, "batch_size": 1, "max_receive_count": 20}),
        id="worker settings",
    ),
    pytest.param(doc(schedule={"expression": "rate(1 hour)"}), id="schedule: rate, UTC by default"),
    pytest.param(doc(schedule={"expression": "rate(15 minutes)"}), id="schedule: rate in minutes"),
    pytest.param(
        doc(schedule={"expression": "cron(30 6 ? * MON-FRI *)", "timezone": "America/New_York"}),
        id="schedule: cron on weekdays in a time zone",
    ),
    pytest.param(doc(schedule={"expression": "cron(0 0/4 1,15 * ? *)"}), id="schedule: cron, days of the month"),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "complete_within_minutes": 5}), id="schedule: complete within 5 min"
    ),
    pytest.param(
        doc(schedule={"expression": "rate(2 days)", "complete_within_minutes": 2880}),
        id="schedule: complete within two days",
    ),
    pytest.param(
        doc(columns={"id": "bigint", "Name": "string", "_score": "double", "active": "boolean"}),
        id="columns: scalar types, a capitalised field",
    ),
    pytest.param(
        doc(columns={"updated_at": "timestamp", "day": "date", "tags": "json"}, curated={"recent_days": 3650}),
        id="columns: time types, json, curated for ten years",
    ),
    pytest.param(doc(columns={"id": "bigint"}, curated={"recent_days": 1}), id="columns: curated for a day"),
    pytest.param(doc(columns={"id": "string"}, record_id_path="id"), id="columns: the record id"),
    pytest.param(
        doc(columns={"customer": "json"}, record_id_path="customer.id"), id="columns: a nested id in a json column"
    ),
    pytest.param(
        doc(params={"per_page": 200, "ratio": 0.5, "expand": True, "q": "all"}, headers={"X-Version": 2}),
        id="params and headers: scalars",
    ),
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_configs_load(raw: dict[str, Any]) -> None:
    sources = parse_sources(raw, "sources.yaml")
    assert sources.get("api-x").name == "api-x"


INVALID = [
    pytest.param(
        doc(pagination={"type": "cursor"}),
        "sources.yaml: source 'api-x': pagination.cursor_path: Value error, "
        "give cursor_path (where the body holds the next cursor), "
        "or cursor_from: last_record with cursor_field",
        id="cursor without cursor_path or cursor_field",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_path": "next", "cursor_field": "id"}),
        "sources.yaml: source 'api-x': pagination.cursor_field: Value error, "
        "cursor_field is the record's field for cursor_from: last_record (or first_record)",
        id="cursor_field with the cursor in the body",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_from": "last_record"}),
        "sources.yaml: source 'api-x': pagination.cursor_field: Value error, "
        "cursor_from: last_record needs cursor_field (the record's field, e.g. id)",
        id="last_record without cursor_field",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_from": "last_record", "cursor_field": "id", "cursor_path": "n"}),
        "sources.yaml: source 'api-x': pagination.cursor_path: Value error, "
        "cursor_from: last_record takes the cursor from a record's cursor_field: drop cursor_path",
        id="both cursor styles",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_from": "last", "cursor_field": "id"}),
        "sources.yaml: source 'api-x': pagination.cursor_from: Input should be 'body', 'last_record' or 'first_record'",
        id="unknown cursor_from",
    ),
    pytest.param(
        doc(pagination={"type": "cursor", "cursor_from": "last_record", "cursor_field": ""}),
        "sources.yaml: source 'api-x': pagination.cursor_field: String should have at least 1 character",
        id="empty cursor_field",
    ),
    pytest.param(
        doc(pagination={"type": "scroll"}),
        "sources.yaml: source 'api-x': pagination.type: Input tag 'scroll' found using 'type' does not match any of",
        id="unknown pagination type",
    ),
    pytest.param(
        doc(pagination={"type": "offset"}),
        "sources.yaml: source 'api-x': pagination.total_path: Field required",
        id="offset without total",
    ),
    pytest.param(
        doc(pagination={"type": "page_number", "total_path": "a", "total_pages_path": "b"}),
        "source 'api-x': pagination.total_pages_path: Value error, give total_path or total_pages_path, not both",
        id="two totals",
    ),
    pytest.param(
        {"version": 1, "sources": [{k: v for k, v in BASE.items() if k != "records_path"}]},
        "sources.yaml: source 'api-x': records_path: Field required",
        id="missing records path",
    ),
    pytest.param(
        doc(base_url="http://api.example.com"),
        "sources.yaml: source 'api-x': base_url: Value error, must use https",
        id="plain http to a remote host",
    ),
    pytest.param(
        doc(base_url="https://api.example.com?key=1"),
        "sources.yaml: source 'api-x': base_url: Value error, must not carry a query",
        id="query in base url",
    ),
    pytest.param(
        doc(path="v1/things"), "sources.yaml: source 'api-x': path: Value error, must start with '/'", id="path"
    ),
    pytest.param(doc(name="API X"), "sources.yaml: source 'API X': name: String should match pattern", id="bad name"),
    pytest.param(
        doc(budget={"max_concurrency": 1}),
        "sources.yaml: source 'api-x': budget.max_concurrency: Input should be greater than or equal to 2",
        id="concurrency below the SQS minimum",
    ),
    pytest.param(
        doc(auth={"type": "api_key"}),
        "sources.yaml: source 'api-x': auth.secret_name: Field required",
        id="key, no secret",
    ),
    pytest.param(
        doc(sharding={"type": "daily", "start_param": "from"}),
        "sources.yaml: source 'api-x': sharding.end_param: Field required",
        id="daily without end param",
    ),
    pytest.param(doc(colour="blue"), "sources.yaml: source 'api-x': colour: Extra inputs are not permitted", id="typo"),
    pytest.param(
        {"version": 1, "sources": [BASE, BASE]},
        "sources.yaml: source 'api-x': name: Value error, source 'api-x' is declared more than once",
        id="duplicate names",
    ),
    pytest.param({"version": 1, "sources": []}, "sources.yaml: sources: List should have at least 1 item", id="none"),
    pytest.param(
        doc(name="a" * 39), "sources.yaml: source '" + "a" * 39 + "': name: String should match pattern", id="long name"
    ),
    pytest.param(
        doc(worker={"timeout_seconds": 901}),
        "sources.yaml: source 'api-x': worker.timeout_seconds: Input should be less than or equal to 900",
        id="worker timeout over Lambda's",
    ),
    pytest.param(
        doc(worker={"batch_size": 11}),
        "sources.yaml: source 'api-x': worker.batch_size: Input should be less than or equal to 10",
        id="batch over SQS's 10",
    ),
    pytest.param(
        doc(worker={"memory": 512}),
        "sources.yaml: source 'api-x': worker.memory: Extra inputs are not permitted",
        id="worker typo",
    ),
    pytest.param(
        doc(schedule={"expression": "0 1 * * *"}),
        "sources.yaml: source 'api-x': schedule.expression: Value error, must be cron(minutes hours day-of-month",
        id="schedule: a bare crontab line",
    ),
    pytest.param(
        doc(schedule={"expression": "cron(0 1 * * *)"}),
        "sources.yaml: source 'api-x': schedule.expression: Value error, cron takes six fields",
        id="schedule: five cron fields",
    ),
    pytest.param(
        doc(schedule={"expression": "cron(0 1 * * MON *)"}),
        "schedule.expression: Value error, cron: one of day-of-month and day-of-week must be '?'",
        id="schedule: both days",
    ),
    pytest.param(
        doc(schedule={"expression": "cron(0 1% ? * * *)"}),
        "schedule.expression: Value error, cron: hours '1%' is not valid",
        id="schedule: a bad cron field",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 hours)"}),
        "sources.yaml: source 'api-x': schedule.expression: Value error, rate: a positive number, the unit singular",
        id="schedule: plural for 1",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(0 minutes)"}),
        "schedule.expression: Value error, rate:",
        id="schedule: rate 0",
    ),
    pytest.param(
        doc(schedule={"expression": "at(2026-12-01T00:00:00)"}),
        "schedule.expression: Value error, must be cron(",
        id="schedule: one-time",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "timezone": "Europe/Atlantis"}),
        "sources.yaml: source 'api-x': schedule.timezone: Value error, unknown IANA time zone 'Europe/Atlantis'",
        id="schedule: unknown time zone",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "timezone": "/etc/localtime"}),
        "schedule.timezone: Value error, not an IANA time zone name",
        id="schedule: a path for a zone",
    ),
    pytest.param(
        doc(schedule={"cron": "cron(0 1 * * ? *)"}),
        "sources.yaml: source 'api-x': schedule.expression: Field required",
        id="schedule: no expression",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "complete_within_minutes": 4}),
        "sources.yaml: source 'api-x': schedule.complete_within_minutes: Input should be greater than or equal to 5",
        id="schedule: complete within too soon",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "complete_within_minutes": 2881}),
        "sources.yaml: source 'api-x': schedule.complete_within_minutes: Input should be less than or equal to 2880",
        id="schedule: complete within more than two days",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 day)", "complete_within_minutes": "six hours"}),
        "sources.yaml: source 'api-x': schedule.complete_within_minutes: Input should be a valid integer",
        id="schedule: complete within as words",
    ),
    pytest.param(
        doc(columns={"id": "int"}),
        "sources.yaml: source 'api-x': columns.id: Input should be 'string', 'bigint', 'double', 'boolean', "
        "'timestamp', 'date' or 'json'",
        id="columns: unknown type",
    ),
    pytest.param(
        doc(columns={}),
        "sources.yaml: source 'api-x': columns: Value error, declare at least one field, or leave columns out",
        id="columns: empty",
    ),
    pytest.param(
        doc(columns={"created-at": "timestamp"}),
        "sources.yaml: source 'api-x': columns: Value error, field 'created-at': its column name 'created-at' "
        "(the field lowercased) must match [a-z_][a-z0-9_]*",
        id="columns: a dash",
    ),
    pytest.param(
        doc(columns={"2fa": "boolean"}),
        "columns: Value error, field '2fa': its column name '2fa' (the field lowercased) must match",
        id="columns: a leading digit",
    ),
    pytest.param(
        doc(columns={"user.name": "string"}),
        "columns: Value error, field 'user.name': its column name 'user.name'",
        id="columns: a nested path (top-level fields only)",
    ),
    pytest.param(
        doc(columns={"Ingestion_Date": "date"}),
        "sources.yaml: source 'api-x': columns: Value error, field 'Ingestion_Date': 'ingestion_date' is the curated "
        "table's partition column",
        id="columns: the partition's name",
    ),
    pytest.param(
        doc(columns={"userId": "bigint", "userid": "string"}),
        "sources.yaml: source 'api-x': columns: Value error, fields 'userId' and 'userid' are both column 'userid'",
        id="columns: two fields, one column",
    ),
    pytest.param(
        doc(columns=["id", "name"]),
        "sources.yaml: source 'api-x': columns: Input should be a valid dictionary",
        id="columns: a list",
    ),
    pytest.param(
        doc(curated={"recent_days": 7}),
        "sources.yaml: source 'api-x': curated: Value error, a curated table needs columns; declare columns or drop",
        id="curated without columns",
    ),
    pytest.param(
        doc(columns={"name": "string"}, record_id_path="id"),
        "sources.yaml: source 'api-x': record_id_path: Value error, declare 'id' in columns",
        id="columns without the record id",
    ),
    pytest.param(
        doc(columns={"customer": "string"}, record_id_path="customer.id"),
        "record_id_path: Value error, declare 'customer' in columns as json (the id is nested in it)",
        id="columns: a nested id in a column that is not json",
    ),
    pytest.param(
        doc(columns={"id": "bigint"}, curated={"recent_days": 0}),
        "sources.yaml: source 'api-x': curated.recent_days: Input should be greater than or equal to 1",
        id="curated: no day",
    ),
    pytest.param(
        doc(columns={"id": "bigint"}, curated={"recent_days": 3651}),
        "sources.yaml: source 'api-x': curated.recent_days: Input should be less than or equal to 3650",
        id="curated: over ten years",
    ),
    pytest.param(
        doc(columns={"id": "bigint"}, curated={"days": 3}),
        "sources.yaml: source 'api-x': curated.days: Extra inputs are not permitted",
        id="curated: typo",
    ),
    pytest.param(
        doc(params={"per_page": None}),
        "sources.yaml: source 'api-x': params.per_page: Value error, must be a string, a number or a boolean, "
        "not null (write '' for an empty value)",
        id="params: null",
    ),
    pytest.param(
        doc(params={"ids": [1, 2]}),
        "sources.yaml: source 'api-x': params.ids: Value error, must be a string, a number or a boolean, not a list",
        id="params: a list",
    ),
    pytest.param(
        doc(headers={"X-Filter": {"a": 1}}),
        "sources.yaml: source 'api-x': headers.X-Filter: Value error, must be a string, a number or a boolean, "
        "not a mapping",
        id="headers: a mapping",
    ),
    pytest.param(
        doc(params={"since": date(2026, 1, 1)}),
        "sources.yaml: source 'api-x': params.since: Value error, must be a string, a number or a boolean, "
        "not a date (quote it to send it as written)",
        id="params: an unquoted YAML date",
    ),
    pytest.param(
        doc(params={"ratio": float("inf")}),
        "sources.yaml: source 'api-x': params.ratio: Value error, must be a finite number, not inf",
        id="params: infinity",
    ),
    pytest.param({"version": 2, "sources": [BASE]}, "sources.yaml: version: Input should be 1", id="version"),
    pytest.param(
        ["not", "a", "mapping"], "sources.yaml: (file): Input should be a valid dictionary", id="not a mapping"
    ),
]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_configs_say_file_source_and_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(raw, "sources.yaml")
    assert message in str(raised.value)


@pytest.mark.parametrize("path", [paths.SOURCES, paths.EXAMPLE_SOURCES], ids=["the user's", "the examples"])
def test_the_shipped_sources_files_are_valid(path: Path) -> None:
    sources = load_sources(path)
    assert sources.sources
    assert all(s.base_url.startswith("https://") for s in sources.sources)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("cron( 0  1 * * ?  * )", "cron(0 1 * * ? *)"), ("rate(2   hours)", "rate(2 hours)")],
)
def test_a_schedule_expression_is_kept_with_single_spaces(written: str, expected: str) -> None:
    # One schedule per distinct expression: spacing alone does not make another one
    schedule = parse_sources(doc(schedule={"expression": written}), "s.yaml").get("api-x").schedule
    assert schedule is not None and schedule.expression == expected and schedule.timezone == "UTC"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [({"expression": "rate(1 day)"}, None), ({"expression": "rate(1 day)", "complete_within_minutes": 90}, 90)],
    ids=["unset: the stack's setting", "set"],
)
def test_a_schedule_says_when_its_runs_are_expected_complete(schedule: dict[str, Any], expected: int | None) -> None:
    parsed = parse_sources(doc(schedule=schedule), "s.yaml").get("api-x").schedule
    assert parsed is not None and parsed.complete_within_minutes == expected


def test_a_name_of_38_characters_is_the_longest() -> None:
    # apilake-<stage>-worker-<source> must fit Lambda's 64 characters with a 10-character stage
    assert parse_sources(doc(name="a" * 38), "sources.yaml").sources[0].name == "a" * 38
    assert len("apilake-" + "s" * 10 + "-worker-" + "a" * 38) == 64


def test_every_example_source_has_its_fake_vendor() -> None:
    from apilake_dev.demo import example_vendors

    assert set(example_vendors()) == {s.name for s in load_sources(paths.EXAMPLE_SOURCES).sources}


def test_a_file_that_is_not_yaml_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [unclosed")
    with pytest.raises(ConfigError, match=r"sources.yaml:1:19: not valid YAML: while parsing a flow sequence"):
        load_sources(path)


def test_a_missing_file_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the sources file"):
        load_sources(tmp_path / "nope.yaml")


def test_yaml_round_trip_keeps_tagged_unions(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(doc(pagination={"type": "cursor", "cursor_path": "next"})))
    assert isinstance(load_sources(path).get("api-x").pagination, CursorPagination)


def test_unknown_source_names_the_declared_ones() -> None:
    sources = parse_sources(doc(), "sources.yaml")
    with pytest.raises(ConfigError, match=r"unknown source 'api-z'; declared: api-x"):
        sources.select(["api-z"])


@pytest.mark.parametrize(("rps", "workers", "share"), [(10, 2, 5.0), (50, 5, 10.0), (None, 2, None)])
def test_each_worker_keeps_to_its_share_of_the_budget(rps: float | None, workers: int, share: float | None) -> None:
    assert Budget(requests_per_second=rps, max_concurrency=workers).per_worker_rps == share


@pytest.mark.parametrize(
    ("columns", "curated", "names", "recent_days"),
    [
        (None, None, {}, 7),
        ({"id": "bigint", "createdAt": "timestamp"}, None, {"id": "id", "createdAt": "createdat"}, 7),
        ({"ID": "string"}, {"recent_days": 30}, {"ID": "id"}, 30),
    ],
    ids=["raw only", "columns, curated by default", "columns, curated for 30 days"],
)
def test_declared_fields_name_their_columns_lowercased(
    columns: dict[str, str] | None, curated: dict[str, int] | None, names: dict[str, str], recent_days: int
) -> None:
    extra: dict[str, Any] = {k: v for k, v in {"columns": columns, "curated": curated}.items() if v is not None}
    source = parse_sources(doc(**extra), "sources.yaml").get("api-x")
    assert source.column_names() == names
    assert source.curated.recent_days == recent_days
    assert source.columns is None or all(isinstance(t, ColumnType) for t in source.columns.values())
