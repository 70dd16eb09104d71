"""SQL over the lake folder with DuckDB: one view per source (``source_api_b``, as the Glue table), and ``raw``.

The lake stays as gzip NDJSON in its S3 layout; DuckDB reads it in place, with the key's
``source=``, ``ingestion_date=`` and ``shard=`` folders as columns (Hive partitioning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from apilake.names import table_name


def sources_in(lake: Path) -> list[str]:
    raw = lake / "raw"
    found = [p.name.removeprefix("source=") for p in sorted(raw.glob("source=*")) if any(p.rglob("*.json.gz"))]
    return found


def connect(lake: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per source that has data, and ``raw`` over every source."""
    connection = duckdb.connect()
    sources = sources_in(lake)
    if not sources:
        raise FileNotFoundError(f"no pages in {lake / 'raw'}: run `apilake demo` or `apilake run --local` first")
    reader = "read_json('{glob}', format='newline_delimited', hive_partitioning=true, union_by_name=true)"
    for source in sources:
        glob = (lake / "raw" / f"source={source}" / "*" / "*" / "*.json.gz").as_posix()
        connection.execute(f'CREATE VIEW "{table_name(source)}" AS SELECT * FROM {reader.format(glob=glob)}')
    everything = (lake / "raw" / "*" / "*" / "*" / "*.json.gz").as_posix()
    connection.execute(f"CREATE VIEW raw AS SELECT * FROM {reader.format(glob=everything)}")
    return connection


def run(lake: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    connection = connect(lake)
    try:
        result = connection.execute(sql)
        columns = [d[0] for d in result.description or []]
        return columns, result.fetchall()
    finally:
        connection.close()
