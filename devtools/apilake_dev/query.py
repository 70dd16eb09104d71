"""SQL over the lake folder with DuckDB, under the names Athena has: one view per source (``source_api_b``, as
the Glue table), and ``raw``; for each source with ``columns`` (the sources file), its curated zone:
``source_api_b_lines``, ``source_api_b_curated`` (Parquet), ``source_api_b_current`` and ``source_api_b_recent``
(apilake.curated's statements, transpiled; stale dates are curated first, apilake_dev.curate); for each other
source with a ``record_id_path``, ``source_api_b_current`` over the raw pages (apilake_dev.sql, decision 27).
And ``run_summary`` (every run's summary: a line per source) with the view ``apilake_runs`` over it, as on
Athena. And one table Athena does not have: ``lake_files`` (zone, source, ingestion_date, key, bytes), the lake
folder's pages and Parquet files, to compare what each zone stores.

The raw zone stays as gzip NDJSON in its S3 layout; DuckDB reads it in place, with the key's
``source=``, ``ingestion_date=`` and ``shard=`` folders as columns (Hive partitioning).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from apilake.config import Source, load_sources
from apilake.curated import RUN_SUMMARY_TABLE, create_runs_view
from apilake.exceptions import ConfigError
from apilake.names import table_name
from apilake.run_summary import SUMMARY_PREFIX, glue_columns
from apilake_dev import curate, paths
from apilake_dev.sql import current_view_name, duckdb_type, local_current_view, to_duckdb

_KEY = re.compile(r"(?:raw|curated)/source=(?P<source>[^/]+)/ingestion_date=(?P<date>\d{4}-\d{2}-\d{2})/")
READER = "read_json('{glob}', format='newline_delimited', hive_partitioning=true, union_by_name=true{extra})"


def sources_in(lake: Path) -> list[str]:
    raw = lake / "raw"
    found = [p.name.removeprefix("source=") for p in sorted(raw.glob("source=*")) if any(p.rglob("*.json.gz"))]
    return found


def known_sources() -> list[Source]:
    """The sources whose record ids name the ``_current`` views: the user's sources file (``apilake run
    --local``), then the examples' (``apilake demo``) for names the user's file does not have."""
    known: dict[str, Source] = {}
    for sources_file in (paths.SOURCES, paths.EXAMPLE_SOURCES):
        try:
            for source in load_sources(sources_file).sources:
                known.setdefault(source.name, source)
        except (ConfigError, OSError):
            continue  # `apilake sources validate` reports a broken file; the plain views need none
    return list(known.values())


def connect(lake: Path, sources: Sequence[Source] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per source that has data, and ``raw`` over every source; and for each of
    ``sources`` (default :func:`known_sources`) that has data: its curated zone's table and views (``columns``),
    else ``source_<name>_current`` over the raw pages (a record id)."""
    landed = sources_in(lake)
    if not landed:
        raise FileNotFoundError(f"no pages in {lake / 'raw'}: run `apilake demo` or `apilake run --local` first")
    configs = [config for config in (known_sources() if sources is None else sources) if config.name in landed]
    written = curate.curate_lake(lake, configs)
    if written:
        print(f"curated first: {', '.join(f'{c.source} {c.ingestion_date}' for c in written)}", file=sys.stderr)
    connection = curate.connect()
    for source in landed:
        glob = (lake / "raw" / f"source={source}" / "*" / "*" / "*.json.gz").as_posix()
        connection.execute(f'CREATE VIEW "{table_name(source)}" AS SELECT * FROM {READER.format(glob=glob, extra="")}')
    for config in configs:
        if config.columns:
            curate.create_lines_view(connection, lake, config.name)
            curate.create_curated_views(connection, lake, config)
        else:
            glob = (lake / "raw" / f"source={config.name}" / "*" / "*" / "*.json.gz").as_posix()
            statement = local_current_view(config, READER.format(glob=glob, extra=", filename=true"))
            try:
                if statement is not None:
                    connection.execute(statement)
            except duckdb.BinderException as exc:  # e.g. no record has the id's column yet: the other views still work
                print(f"no view {current_view_name(config.name)}: {exc}", file=sys.stderr)
    everything = (lake / "raw" / "*" / "*" / "*" / "*.json.gz").as_posix()
    connection.execute(f"CREATE VIEW raw AS SELECT * FROM {READER.format(glob=everything, extra='')}")
    create_lake_files(connection, lake)
    create_run_views(connection, lake)
    return connection


def create_run_views(connection: duckdb.DuckDBPyConnection, lake: Path) -> None:
    """``run_summary`` over the lake folder's run summaries (``ledger/summary/run=<R>.json``, the Glue table's
    columns and types) and ``apilake_runs`` over it (apilake.curated's statement, transpiled); with no summary
    yet, ``run_summary`` is an empty table of those columns."""
    columns = {name: duckdb_type(glue) for name, glue in glue_columns()}
    if any((lake / SUMMARY_PREFIX).glob("*.json")):
        glob = (lake / SUMMARY_PREFIX / "*.json").as_posix()
        types = ", ".join(f"{_literal(name)}: {_literal(kind)}" for name, kind in columns.items())
        reader = f"read_json({_literal(glob)}, format='newline_delimited', columns={{{types}}})"
        connection.execute(f"CREATE VIEW {RUN_SUMMARY_TABLE} AS SELECT * FROM {reader}")
    else:
        declared = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        connection.execute(f"CREATE TABLE {RUN_SUMMARY_TABLE} ({declared})")
    connection.execute(to_duckdb(create_runs_view()))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_lake_files(connection: duckdb.DuckDBPyConnection, lake: Path) -> None:
    """``lake_files``: each raw page and curated Parquet file of the lake folder, its key (as in S3) and size."""
    connection.execute(
        "CREATE TABLE lake_files (zone VARCHAR, source VARCHAR, ingestion_date DATE, key VARCHAR, bytes BIGINT)"
    )
    rows = [
        (zone, match["source"], match["date"], key, path.stat().st_size)
        for zone, pattern in (("raw", "*.json.gz"), ("curated", "*.parquet"))
        for path in sorted((lake / zone).rglob(pattern))
        if (match := _KEY.match(key := path.relative_to(lake).as_posix()))
    ]
    if rows:
        connection.executemany("INSERT INTO lake_files VALUES (?, ?, ?, ?, ?)", rows)


def run(lake: Path, sql: str, sources: Sequence[Source] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    connection = connect(lake, sources)
    try:
        result = connection.execute(sql)
        columns = [d[0] for d in result.description or []]
        return columns, result.fetchall()
    finally:
        connection.close()
