"""The curated zone: apilake.curated's Athena statements parse as Athena SQL, and run in DuckDB (transpiled, as
apilake_dev.curate runs them) over a lake folder in the S3 layout: typed columns, one row per record id and
date, ``_current`` across dates, ``_recent`` over the last N days, pinned types, the same file twice."""

from __future__ import annotations

import gzip
import json
import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from apilake import curated
from apilake.config import ColumnType, Source, load_sources
from apilake.exceptions import ConfigError
from apilake.lake import page_key
from apilake_dev import curate, paths, query
from apilake_dev.sql import to_duckdb
from apilake_dev.vendors.fake import Dataset

ATHENA = "athena" if "athena" in sqlglot.Dialect.classes else "trino"
TODAY = datetime.now(UTC).date()
DAY_1, DAY_2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)
COLUMNS = {
    "id": "string",
    "seq": "bigint",
    "amount": "double",
    "active": "boolean",
    "updatedAt": "timestamp",
    "born": "date",
    "customer": "json",
}


def source(name: str = "api-x", columns: dict[str, str] | None = COLUMNS, **more: Any) -> Source:
    return Source.model_validate(
        {
            "name": name,
            "base_url": "https://vendor.example.com",
            "records_path": "data",
            "record_id_path": "id",
            "pagination": {"type": "link_header"},
            **({"columns": columns} if columns is not None else {}),
            **more,
        }
    )


def land(
    lake: Path, name: str, day: date, records: list[Any], *, shard: str = "all", page: int = 1, at: int | None = None
) -> None:
    """One page as the worker writes it: gzip NDJSON under its deterministic key; ``at``: its mtime (S3's
    LastModified in a mirror of the bucket), seconds after DAY_1's midnight."""
    path = lake / page_key(name, day, shard, page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    if at is not None:
        written = datetime.combine(DAY_1, datetime.min.time(), UTC).timestamp() + at
        os.utime(path, (written, written))


def record(id_: str, **values: Any) -> dict[str, Any]:
    base = {"id": id_, "seq": 1, "amount": 9.5, "active": True, "updatedAt": "2026-11-25T10:00:00Z"}
    return {**base, "born": "1990-05-01", "customer": {"id": "c1"}, **values}


def rows(lake: Path, sql: str, *sources: Source) -> list[dict[str, Any]]:
    columns, found = query.run(lake, sql, sources)
    return [dict(zip(columns, row, strict=True)) for row in found]


def example_sources() -> list[Source]:
    return [*load_sources(paths.EXAMPLE_SOURCES).sources, *load_sources(paths.SOURCES).sources]


def demo_like_lake(lake: Path) -> list[Source]:
    """The example sources' fake vendor records in 100-record pages, api-e's first 30 again a day later."""
    examples = load_sources(paths.EXAMPLE_SOURCES).sources
    for config in examples:
        records = [Dataset(config.name, 250).record(i) for i in range(250)]
        for page in range(3):
            land(lake, config.name, DAY_1, records[page * 100 : page * 100 + 100], page=page + 1)
        land(lake, config.name, DAY_2, [{**r, "revision": 2, "amount": 1.0} for r in records[:30]], shard="since-x")
    return examples


# -- names and statements ---------------------------------------------------------------------------------


def test_names_follow_the_source_table() -> None:
    assert [f("api-b") for f in (curated.lines_table, curated.curated_table)] == [
        "source_api_b_lines",
        "source_api_b_curated",
    ]
    assert [f("api-b") for f in (curated.current_view, curated.recent_view)] == [
        "source_api_b_current",
        "source_api_b_recent",
    ]
    assert curated.curated_prefix("api-b", "2026-11-26") == "curated/source=api-b/ingestion_date=2026-11-26/"
    assert curated.curated_prefix("api-b", date(2026, 11, 26)).startswith(curated.CURATED_PREFIX)
    assert set(curated.COLUMN_TYPES) == set(ColumnType)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: curated.curate_select(source(columns=None), DAY_1), "no columns declared"),
        (lambda: curated.curated_prefix("api-x", "26/11/2026"), "expected YYYY-MM-DD"),
    ],
)
def test_bad_input_is_named(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


# Athena's UNLOAD (sqlglot reads it as an opaque command whatever follows): its query, location and options
UNLOAD = re.compile(r"UNLOAD \((?P<query>.*)\)\nTO '(?P<to>[^']*)'\nWITH \((?P<options>[^()]*)\)", re.DOTALL)


def unload_parts(statement: str) -> tuple[exp.Expr, str, dict[str, str]]:
    """An UNLOAD's query parsed as Athena SQL, its TO location and its WITH options."""
    match = UNLOAD.fullmatch(statement)
    assert match is not None, statement
    options = dict(re.findall(r"(\w+) = '([^']*)'(?:, |$)", match["options"]))
    assert ", ".join(f"{k} = '{v}'" for k, v in options.items()) == match["options"]  # nothing else in it
    return sqlglot.parse_one(match["query"], read=ATHENA), match["to"], options


def test_every_statement_of_the_sources_files_parses_as_athena_sql() -> None:
    for config in [c for c in example_sources() if c.columns]:
        unload, *views = curated.statements(config, "2026-11-26", "lake-bucket")
        select = curated.curate_select(config, "2026-11-26")
        # The UNLOAD's query parses as Athena SQL and is the SELECT; it writes ZSTD Parquet to the date's prefix
        parsed, location, options = unload_parts(unload)
        assert parsed == sqlglot.parse_one(select, read=ATHENA)
        assert location == f"s3://lake-bucket/curated/source={config.name}/ingestion_date=2026-11-26/"
        assert options == {"format": "PARQUET", "compression": "ZSTD"}
        staged = curated.unload_statement(config, "2026-11-26", "lake-bucket", "curated-staging/x/attempt=1/")
        assert unload_parts(staged)[1:] == ("s3://lake-bucket/curated-staging/x/attempt=1/", options)
        assert isinstance(parsed, exp.Select)
        assert [t.name for t in parsed.find_all(exp.Table)] == [curated.lines_table(config.name)]
        assert parsed.named_selects == list(config.column_names().values())
        names = [curated.current_view(config.name), curated.recent_view(config.name)]
        for statement, name in zip(views, names, strict=True):
            view = sqlglot.parse_one(statement, read=ATHENA)
            assert isinstance(view, exp.Create) and view.this.name == name
            assert [t.name for t in view.expression.find_all(exp.Table)] == [curated.curated_table(config.name)]


def test_the_current_view_needs_a_record_id_a_nested_one_from_its_json_column() -> None:
    # (an id that is not a declared column, or nested in one that is not json, is refused by the sources file)
    assert curated.create_current_view(source(record_id_path=None)) is None
    nested = curated.current_select(source(record_id_path="customer.id")) or ""
    window = sqlglot.parse_one(nested, read=ATHENA).find(exp.Window)
    assert (
        window is not None
        and window.args["partition_by"][0].sql(ATHENA) == "JSON_EXTRACT_SCALAR(c.\"customer\", '$.id')"
    )


# -- run in DuckDB ------------------------------------------------------------------------------------------


def test_every_statement_runs_in_duckdb_on_a_demo_like_lake(tmp_path: Path) -> None:
    # Given the example sources' records landed on two dates (api-e-like: 30 records again, changed)
    examples = demo_like_lake(tmp_path)
    # When the lake folder is curated
    written = curate.curate_lake(tmp_path, examples)
    # Then each source and date has its file, one row per id
    assert sorted((c.source, c.ingestion_date, c.rows) for c in written) == sorted(
        [(c.name, DAY_1, 250) for c in examples] + [(c.name, DAY_2, 30) for c in examples]
    )
    connection = curate.connect()
    try:
        for config in examples:
            curate.create_lines_view(connection, tmp_path, config.name)
            assert curate.create_curated_views(connection, tmp_path, config) == [
                curated.curated_table(config.name),
                curated.current_view(config.name),
                curated.recent_view(config.name),
            ]
            # And every statement runs (the UNLOAD's query as the local curation runs it)
            select = to_duckdb(curated.curate_select(config, DAY_2))
            assert len(connection.execute(select).fetchall()) == 30
            for statement in curated.statements(config, DAY_2, "lake-bucket")[1:]:
                connection.execute(to_duckdb(statement))
            table = curated.current_view(config.name)
            found = connection.execute(f"SELECT count(*), count(DISTINCT id), sum(amount) FROM {table}").fetchone()
            total = sum(r["amount"] for r in (Dataset(config.name, 250).record(i) for i in range(30, 250)))
            assert found is not None and found[:2] == (250, 250) and found[2] == pytest.approx(total + 30 * 1.0)
            kinds = dict(connection.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall())
            assert kinds["seq"] == "BIGINT" and kinds["updated_at"].startswith("TIMESTAMP")
            assert kinds["ingestion_date"] == "DATE" and "revision" not in kinds  # not declared
    finally:
        connection.close()


def test_current_has_one_row_per_id_with_the_newer_values(tmp_path: Path) -> None:
    config = source()
    land(tmp_path, "api-x", DAY_1, [record("a", amount=1.0), record("b", amount=2.0), {"amount": 7}])
    land(tmp_path, "api-x", DAY_2, [record("a", amount=10.0, updatedAt="2026-11-26T08:00:00Z"), {"amount": 8}])
    current = rows(tmp_path, "SELECT id, amount, updatedat, ingestion_date FROM source_api_x_current", config)
    assert sorted(current, key=lambda r: (r["id"] or "", r["amount"])) == [
        {"id": None, "amount": 7.0, "updatedat": None, "ingestion_date": DAY_1},  # no id: every row kept
        {"id": None, "amount": 8.0, "updatedat": None, "ingestion_date": DAY_2},
        {"id": "a", "amount": 10.0, "updatedat": datetime(2026, 11, 26, 8), "ingestion_date": DAY_2},
        {"id": "b", "amount": 2.0, "updatedat": datetime(2026, 11, 25, 10), "ingestion_date": DAY_1},
    ]
    assert len(rows(tmp_path, "SELECT * FROM source_api_x_curated", config)) == 5


@pytest.mark.parametrize(
    ("pages", "latest"),
    [
        # (shard, page, written at, seq): the object written last wins, whatever its name
        ([("since-999", 1, 10, 1), ("since-1000", 1, 20, 2)], 2),  # since-1000 sorts first, landed later
        ([("since-1000", 1, 10, 1), ("since-999", 1, 20, 2)], 2),
        ([("a", 2, 10, 2), ("a", 1, 20, 1)], 1),  # page 1 landed again, later
        # the same time: the later object key (zero-padded pages, then shards)
        ([("a", 10, 10, 10), ("a", 9, 10, 9)], 10),
        ([("b", 1, 10, 3), ("a", 2, 10, 2)], 3),
    ],
)
def test_within_a_date_the_object_written_last_wins_then_the_later_key(
    tmp_path: Path, pages: list[tuple[str, int, int, int]], latest: int
) -> None:
    # Given one record landed in several pages of a date
    for shard, page, at, seq in pages:
        land(
            tmp_path,
            "api-x",
            DAY_1,
            [record("a", seq=seq), record(f"other-{shard}-{page}")],
            shard=shard,
            page=page,
            at=at,
        )
    # Then the curated table has its latest version, and every other record
    found = rows(tmp_path, "SELECT id, seq FROM source_api_x_curated ORDER BY id", source())
    assert (found[0]["id"], found[0]["seq"]) == ("a", latest) and len(found) == 1 + len(pages)


@pytest.mark.parametrize("days", [1, 2, 5])
def test_recent_keeps_the_last_n_ingestion_dates_up_to_today(tmp_path: Path, days: int) -> None:
    # Given one record landed on each of the last 7 days (today included)
    config = source(curated={"recent_days": days})
    for back in range(7):
        land(tmp_path, "api-x", TODAY - timedelta(days=back), [record(f"r{back}")])
    # Then _recent has the last `days` of them, and _curated all 7
    recent = rows(tmp_path, "SELECT ingestion_date FROM source_api_x_recent ORDER BY 1", config)
    assert [r["ingestion_date"] for r in recent] == [TODAY - timedelta(days=back) for back in reversed(range(days))]
    assert len(rows(tmp_path, "SELECT * FROM source_api_x_curated", config)) == 7


@pytest.mark.parametrize("record_id_path", ["id", None])
def test_recent_has_each_record_landed_in_the_last_n_days_once_its_latest_version(
    tmp_path: Path, record_id_path: str | None
) -> None:
    # Given a record landed before the window and twice in it, another once in it
    config = source(curated={"recent_days": 3}, record_id_path=record_id_path)
    land(tmp_path, "api-x", TODAY - timedelta(days=5), [record("a", seq=1), record("gone", seq=1)])
    land(tmp_path, "api-x", TODAY - timedelta(days=2), [record("a", seq=2), record("b", seq=1)])
    land(tmp_path, "api-x", TODAY, [record("a", seq=3)])
    # Then _recent has each of them once, at its latest version (every row without a record id)
    recent = rows(tmp_path, "SELECT id, seq FROM source_api_x_recent ORDER BY id, seq", config)
    versions = [("a", 3), ("b", 1)] if record_id_path else [("a", 2), ("a", 3), ("b", 1)]
    assert [(r["id"], r["seq"]) for r in recent] == versions


@pytest.mark.parametrize(
    ("field", "landed", "column", "kept"),
    [
        ("seq", "seven", "seq", None),  # bigint seen as a string
        ("seq", 7.5, "seq", None),  # bigint seen as a number with a fraction
        ("seq", {"n": 7}, "seq", None),  # bigint seen as an object
        ("seq", "7", "seq", 7),  # digits are a bigint's text in Athena as in DuckDB
        ("seq", " 7", "seq", None),
        ("seq", "7\n", "seq", None),  # Trino's $ would match before a final newline: \z does not
        ("seq", "9223372036854775807", "seq", 9223372036854775807),  # 19 digits (Snowflake-style ids)
        ("seq", 1234567890123456789, "seq", 1234567890123456789),
        ("seq", "-9223372036854775808", "seq", -9223372036854775808),
        ("seq", "9223372036854775808", "seq", None),  # 19 digits over bigint: NULL, not an error
        ("seq", 9223372036854775808, "seq", None),
        ("seq", "12345678901234567890", "seq", None),  # 20 digits
        ("amount", {"value": 3.5}, "amount", None),  # double seen as an object
        ("amount", 3, "amount", 3.0),  # an integer is a double
        ("active", "yes", "active", None),  # boolean seen as a string
        ("active", 1, "active", None),
        ("id", {"k": 1}, "id", None),  # string seen as an object
        ("id", 12, "id", "12"),  # a number's text is a string
        ("updatedAt", "yesterday", "updatedat", None),
        ("updatedAt", 1764064800, "updatedat", None),  # epoch seconds are not a timestamp
        ("updatedAt", "2026-11-25T12:00:00+02:00", "updatedat", datetime(2026, 11, 25, 10)),  # in UTC
        ("updatedAt", "2026-11-26 13:00:05+02:00", "updatedat", datetime(2026, 11, 26, 11, 0, 5)),
        ("updatedAt", "2026-11-26T00:30:00+01:00", "updatedat", datetime(2026, 11, 25, 23, 30)),
        ("updatedAt", "2026-11-26T13:00:05-05:30", "updatedat", datetime(2026, 11, 26, 18, 30, 5)),
        ("updatedAt", "2026-11-25 12:00:00", "updatedat", datetime(2026, 11, 25, 12)),  # no zone: UTC
        ("updatedAt", "2026-11-25T12:00:00.250Z", "updatedat", datetime(2026, 11, 25, 12, 0, 0, 250000)),
        ("updatedAt", "2026-11-25T12:00:00.9999Z", "updatedat", datetime(2026, 11, 25, 12, 0, 0, 999000)),
        ("updatedAt", "2026-11-25T12:00:00.123456+00:00", "updatedat", datetime(2026, 11, 25, 12, 0, 0, 123000)),
        ("updatedAt", "2026-11-25T12:00:00.5", "updatedat", datetime(2026, 11, 25, 12, 0, 0, 500000)),
        ("updatedAt", "2026-11-26 13:00:05 UTC", "updatedat", None),  # a zone's name
        ("updatedAt", " 2026-11-26T13:00:05Z", "updatedat", None),  # a leading space
        ("updatedAt", "2026-11-26T13:00:05Z\n", "updatedat", None),
        ("updatedAt", "2026-11-26T24:00:00Z", "updatedat", None),  # hour 24
        ("updatedAt", "2026-11-26T13", "updatedat", None),  # no minutes
        ("updatedAt", "2026-11-26T13:00Z", "updatedat", None),  # no seconds
        ("updatedAt", "2026-11-26T13:00:05.Z", "updatedat", None),
        ("updatedAt", "2026-11-26T13:00:05+0200", "updatedat", None),  # an offset without its colon
        ("updatedAt", "2026-02-30T13:00:05Z", "updatedat", None),  # no such day
        ("updatedAt", "2026-11-26", "updatedat", None),  # a date
        ("born", "2026-02-30", "born", None),
        ("born", "26/11/2026", "born", None),
        ("born", "1990-05-01T00:00:00Z", "born", None),  # a timestamp is not a date
        ("born", "1990-05-01", "born", date(1990, 5, 1)),
        ("customer", "a string", "customer", '"a string"'),  # json keeps anything, as JSON text
        ("customer", None, "customer", None),  # JSON's null is NULL
        ("customer", [1, {"a": None}], "customer", '[1,{"a":null}]'),
    ],
)
def test_a_value_of_another_type_is_null_and_the_column_keeps_its_type(
    tmp_path: Path, field: str, landed: Any, column: str, kept: Any
) -> None:
    # Given a record whose field the vendor sends in another type than the one declared
    config = source()
    land(tmp_path, "api-x", DAY_1, [record("a")])
    land(tmp_path, "api-x", DAY_2, [record("b", **{field: landed})])
    # Then the curated table has the pinned type, the value only when it is of that type, the other fields intact
    sql = f"SELECT {column}, amount, typeof({column}) AS kind FROM source_api_x_curated ORDER BY ingestion_date"
    first, second = rows(tmp_path, sql, config)
    assert second[column] == kept
    assert first["kind"] == second["kind"]  # pinned: the same type for both rows
    if field != "amount":
        assert second["amount"] == 9.5


def test_curating_a_date_twice_gives_the_same_file(tmp_path: Path) -> None:
    # Given a date with duplicates within a page and across pages
    config = source()
    land(tmp_path, "api-x", DAY_1, [record("a", seq=1), record("a", seq=2), record("b")], page=1)
    land(tmp_path, "api-x", DAY_1, [record("c"), {"amount": 1}], page=2)
    connection = curate.connect()
    try:
        curate.create_lines_view(connection, tmp_path, config.name)
        first = curate.curate_date(connection, tmp_path, config, DAY_1)
        content = first.path.read_bytes()
        # When it is curated again
        again = curate.curate_date(connection, tmp_path, config, DAY_1)
        # Then the file is the same, byte for byte, and nothing else is in the date's folder
        assert again.path.read_bytes() == content and again.rows == first.rows == 4
        assert [p.name for p in again.path.parent.iterdir()] == [curate.DATA_FILE]
        # And it is no longer stale; a page landing later makes it stale again
        assert not curate.is_stale(connection, tmp_path, config, DAY_1)
        assert curate.curate_lake(tmp_path, [config]) == []
        land(tmp_path, "api-x", DAY_1, [record("d")], page=3)
        page = tmp_path / page_key("api-x", DAY_1, "all", 3)
        future = again.path.stat().st_mtime + 10
        os.utime(page, (future, future))
        assert curate.is_stale(connection, tmp_path, config, DAY_1)
    finally:
        connection.close()
    assert [(c.ingestion_date, c.rows) for c in curate.curate_lake(tmp_path, [config])] == [(DAY_1, 5)]


def test_accepting_a_change_of_columns_recurates_the_dates(tmp_path: Path) -> None:
    # Given a source curated with its columns, then a field added to them (a change accepted)
    land(tmp_path, "api-x", DAY_1, [record("a", plan="pro")])
    assert rows(tmp_path, "SELECT count(*) AS n FROM source_api_x_curated", source()) == [{"n": 1}]
    wider = source(columns={**COLUMNS, "plan": "string"})
    # Then the next query curates the date again, with the new column
    assert rows(tmp_path, "SELECT plan FROM source_api_x_current", wider) == [{"plan": "pro"}]


def test_a_source_without_columns_keeps_the_raw_current_view(tmp_path: Path) -> None:
    raw_only, typed = source("api-r", columns=None), source("api-t")
    land(tmp_path, "api-r", DAY_1, [record("a")])
    land(tmp_path, "api-t", DAY_1, [record("a")])
    connection = query.connect(tmp_path, [raw_only, typed])
    try:
        views = {
            name for (name,) in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert views == {
            "raw",
            "source_api_r",
            "source_api_t",
            "source_api_r_current",
            *(f"source_api_t_{kind}" for kind in ("lines", "curated", "current", "recent")),
            curated.RUNS_VIEW,  # every run's summary (none yet: an empty table under it)
        }
        assert not (tmp_path / curated.CURATED_PREFIX / "source=api-r").exists()
        files = connection.execute("SELECT zone, source, bytes > 0 FROM lake_files ORDER BY 1, 2").fetchall()
        assert files == [("curated", "api-t", True), ("raw", "api-r", True), ("raw", "api-t", True)]
    finally:
        connection.close()


def test_to_duckdb_reads_json_extract_scalar_as_trino_does() -> None:
    # Trino's json_extract_scalar of an object or array is NULL; DuckDB's ->> alone would give its text
    statement = """SELECT json_extract_scalar(x, '$.a') AS a FROM (VALUES ('{"a": {"b": 1}}'), ('{"a": [1]}'),
        ('{"a": "s"}'), ('{"a": 2}'), ('{"a": null}'), ('{}')) AS t(x)"""
    found = duckdb.connect().execute(to_duckdb(statement)).fetchall()
    assert found == [(None,), (None,), ("s",), ("2",), (None,), (None,)]
