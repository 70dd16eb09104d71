"""The latest version of each record: one Athena (Trino) statement per source, and the same transpiled for
DuckDB, run over a small lake folder in the S3 layout."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from apilake.config import Source, load_sources
from apilake.curated import RUNS_VIEW
from apilake.lake import page_key
from apilake.names import table_name
from apilake_dev import paths, query
from apilake_dev.sql import create_current_view, current_select, current_view_name, id_expression

DAY_1, DAY_2 = date(2026, 11, 25), date(2026, 11, 26)


def source(name: str, record_id_path: str | None) -> Source:
    return Source.model_validate(
        {
            "name": name,
            "base_url": "https://vendor.example.com",
            "records_path": "data",
            "record_id_path": record_id_path,
            "pagination": {"type": "link_header"},
        }
    )


def land(lake: Path, name: str, day: date, records: list[dict[str, Any]], *, shard: str = "all", page: int = 1) -> None:
    """One page as the worker writes it: gzip NDJSON under its deterministic key."""
    path = lake / page_key(name, day, shard, page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))


def rows(lake: Path, sql: str, *sources: Source) -> list[dict[str, Any]]:
    columns, found = query.run(lake, sql, sources)
    return [dict(zip(columns, row, strict=True)) for row in found]


def test_every_source_of_both_sources_files_has_an_athena_statement_if_it_has_a_record_id() -> None:
    configs = [*load_sources(paths.SOURCES).sources, *load_sources(paths.EXAMPLE_SOURCES).sources]
    configs += [source("nested-ids", "customer.id"), source("no-ids", None)]
    for config in configs:
        statement = create_current_view(config)
        if config.record_id_path is None:
            assert statement is None and current_select(config) is None
            continue
        assert statement is not None
        parsed = sqlglot.parse_one(statement, read="athena")  # raises on anything Athena's engine would not read
        assert isinstance(parsed, exp.Create) and parsed.this.name == current_view_name(config.name)
        assert [t.name for t in parsed.expression.find_all(exp.Table)] == [table_name(config.name)]
        select = current_select(config)
        assert select is not None and isinstance(sqlglot.parse_one(select, read="athena"), exp.Select)


def test_a_nested_record_id_is_a_field_of_a_struct_column() -> None:
    assert id_expression("customer.id") == 't."customer"."id"'
    config = source("nested-ids", "customer.id")
    window = sqlglot.parse_one(current_select(config) or "", read="athena").find(exp.Window)
    assert window is not None
    assert window.args["partition_by"][0].sql("trino") == 't."customer"."id"'


def test_the_current_view_gives_the_newer_version_of_a_record_landed_on_two_dates(tmp_path: Path) -> None:
    config = source("api-x", "id")
    land(tmp_path, "api-x", DAY_1, [{"id": 1, "status": "open"}, {"id": 2, "status": "open"}])
    land(tmp_path, "api-x", DAY_2, [{"id": 1, "status": "closed"}])
    assert len(rows(tmp_path, "SELECT * FROM source_api_x", config)) == 3  # every landing
    current = rows(tmp_path, "SELECT * FROM source_api_x_current ORDER BY id", config)
    assert [(r["id"], r["status"], str(r["ingestion_date"])) for r in current] == [
        (1, "closed", "2026-11-26"),
        (2, "open", "2026-11-25"),
    ]
    assert {r["version_rank"] for r in current} == {1}
    assert "filename" not in current[0]  # the view's columns are the table's, as in Athena


def test_on_one_date_the_later_shard_then_the_later_page_wins(tmp_path: Path) -> None:
    config = source("api-x", "id")
    land(tmp_path, "api-x", DAY_1, [{"id": 1, "v": "page 2"}], shard="a", page=2)
    land(tmp_path, "api-x", DAY_1, [{"id": 1, "v": "page 1"}], shard="a", page=1)
    land(tmp_path, "api-x", DAY_1, [{"id": 2, "v": "shard a"}], shard="a", page=1)
    land(tmp_path, "api-x", DAY_1, [{"id": 3, "v": "page 10"}], shard="a", page=10)
    land(tmp_path, "api-x", DAY_1, [{"id": 3, "v": "page 9"}], shard="a", page=9)
    land(tmp_path, "api-x", DAY_1, [{"id": 2, "v": "shard b"}], shard="b", page=1)
    current = rows(tmp_path, "SELECT id, v FROM source_api_x_current ORDER BY id", config)
    assert [(r["id"], r["v"]) for r in current] == [(1, "page 2"), (2, "shard b"), (3, "page 10")]


def test_a_nested_record_id_dedupes_on_the_struct_field(tmp_path: Path) -> None:
    config = source("api-n", "customer.id")
    land(
        tmp_path,
        "api-n",
        DAY_1,
        [{"customer": {"id": "c1", "tier": "free"}}, {"customer": {"id": "c2", "tier": "free"}}],
    )
    land(tmp_path, "api-n", DAY_2, [{"customer": {"id": "c1", "tier": "pro"}}])
    current = rows(
        tmp_path, "SELECT customer.id AS id, customer.tier AS tier FROM source_api_n_current ORDER BY 1", config
    )
    assert [(r["id"], r["tier"]) for r in current] == [("c1", "pro"), ("c2", "free")]


def test_records_without_an_id_are_all_kept(tmp_path: Path) -> None:
    config = source("api-x", "id")
    land(tmp_path, "api-x", DAY_1, [{"id": 1, "v": "a"}, {"v": "no id"}, {"id": None, "v": "null id"}])
    land(tmp_path, "api-x", DAY_2, [{"id": 1, "v": "b"}, {"v": "no id"}])
    current = rows(tmp_path, "SELECT id, v FROM source_api_x_current ORDER BY v", config)
    assert [(r["id"], r["v"]) for r in current] == [(1, "b"), (None, "no id"), (None, "no id"), (None, "null id")]


def test_a_source_without_record_id_path_gets_no_current_view(tmp_path: Path) -> None:
    with_ids, without = source("api-x", "id"), source("api-y", None)
    land(tmp_path, "api-x", DAY_1, [{"id": 1}])
    land(tmp_path, "api-y", DAY_1, [{"id": 1}])
    connection = query.connect(tmp_path, [with_ids, without])
    try:
        views = {
            name for (name,) in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert views == {"raw", "source_api_x", "source_api_y", "source_api_x_current", RUNS_VIEW}
        with pytest.raises(duckdb.CatalogException):
            connection.execute("SELECT * FROM source_api_y_current")
    finally:
        connection.close()


def test_a_configured_source_with_no_pages_yet_gets_no_view(tmp_path: Path) -> None:
    land(tmp_path, "api-x", DAY_1, [{"id": 1}])
    assert rows(
        tmp_path, "SELECT count(*) AS n FROM source_api_x_current", source("api-x", "id"), source("api-z", "id")
    ) == [{"n": 1}]


def test_without_sources_given_the_views_follow_the_projects_sources_files(tmp_path: Path) -> None:
    named = {s.name: s for s in query.known_sources()}
    with_id = next(name for name, s in named.items() if s.record_id_path == "id")
    land(tmp_path, with_id, DAY_1, [{"id": 1, "name": "old"}])
    land(tmp_path, with_id, DAY_2, [{"id": 1, "name": "new"}])
    _, found = query.run(tmp_path, f"SELECT name FROM {current_view_name(with_id)}")  # raw or curated alike
    assert found == [("new",)]


def test_an_id_no_landed_record_has_leaves_out_only_that_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    land(tmp_path, "api-x", DAY_1, [{"id": 1}])
    assert rows(tmp_path, "SELECT count(*) AS n FROM source_api_x", source("api-x", "customer.id")) == [{"n": 1}]
    assert "no view source_api_x_current" in capsys.readouterr().err
