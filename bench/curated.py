"""Raw vs curated on a lake folder: bytes per source (gzip NDJSON pages vs Parquet files), the bytes a typical
query reads from each (Parquet: only its columns), and the local query time of the same query over each
(DuckDB, median of interleaved runs).

    python -m bench.curated [--lake DIR]            # the demo's lake (default .apilake/lake; `make demo` first)
    python -m bench.curated --synthetic 200000      # one source of N fake vendor records, in 100-record pages
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from apilake import curated
from apilake.config import Source, load_sources
from apilake.lake import page_key
from apilake.names import table_name
from apilake_cli.output import format_table
from apilake_dev import curate, paths, query
from apilake_dev.vendors.fake import Dataset

QUERY = "SELECT currency, count(*) AS records, round(sum(amount), 2) AS amount FROM {table} GROUP BY 1 ORDER BY 1"
QUERY_COLUMNS = ("currency", "amount")
RUNS = 7


def synthetic_lake(lake: Path, records: int) -> list[Source]:
    """``records`` of one example source's fake vendor, landed in 100-record pages on one date, then curated."""
    config = load_sources(paths.EXAMPLE_SOURCES).sources[0]
    dataset = Dataset(config.name, records)
    for page in range(0, records, 100):
        lines = "".join(json.dumps(dataset.record(i)) + "\n" for i in range(page, min(page + 100, records)))
        path = lake / page_key(config.name, date(2026, 11, 26), "all", page // 100 + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(lines.encode()))
    curate.curate_lake(lake, [config])
    return [config]


def parquet_bytes_read(connection: duckdb.DuckDBPyConnection, lake: Path, source: str) -> int:
    """The compressed bytes of the query's columns in the source's Parquet files (what a columnar scan reads)."""
    glob = (curate.curated_folder(lake, source) / "*" / curate.DATA_FILE).as_posix()
    names = ", ".join(f"'{name}'" for name in QUERY_COLUMNS)
    found = connection.execute(
        f"SELECT sum(total_compressed_size) FROM parquet_metadata('{glob}') WHERE path_in_schema IN ({names})"
    ).fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def median_ms(connection: duckdb.DuckDBPyConnection, statements: list[str]) -> list[float]:
    """Each statement's median wall time in ms, runs interleaved so the machine's mood hits both alike."""
    times: list[list[float]] = [[] for _ in statements]
    for _ in range(RUNS):
        for index, statement in enumerate(statements):
            started = time.perf_counter()
            connection.execute(statement).fetchall()
            times[index].append((time.perf_counter() - started) * 1000)
    return [statistics.median(t) for t in times]


def measure(lake: Path, sources: list[Source]) -> list[tuple[object, ...]]:
    connection = query.connect(lake, sources)
    try:
        rows: list[tuple[object, ...]] = []
        for source, raw_bytes, curated_bytes in curate.zone_bytes(lake, [s.name for s in sources if s.columns]):
            raw_table, curated_table = table_name(source), curated.curated_table(source)
            raw_ms, curated_ms = median_ms(connection, [QUERY.format(table=t) for t in (raw_table, curated_table)])
            counted = [connection.execute(f"SELECT count(*) FROM {t}").fetchone() for t in (raw_table, curated_table)]
            rows.append(
                (
                    source,
                    *(c[0] if c else 0 for c in counted),
                    raw_bytes,
                    curated_bytes,
                    parquet_bytes_read(connection, lake, source),
                    f"{raw_ms:.1f}",
                    f"{curated_ms:.1f}",
                )
            )
        return rows
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, default=paths.ROOT / ".apilake" / "lake")
    parser.add_argument("--synthetic", type=int, metavar="N", help="a lake of N records of one source instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.synthetic:
            lake = Path(scratch)
            sources = synthetic_lake(lake, args.synthetic)
        else:
            lake = args.lake
            sources = query.known_sources()
            curate.curate_lake(lake, sources)
        header = ["source", "raw rows", "curated rows", "raw bytes", "curated bytes", "query reads (Parquet)"]
        print(f"query: {QUERY.format(table='<table>')}; median of {RUNS} runs, DuckDB {duckdb.__version__}")
        print(format_table([*header, "raw ms", "curated ms"], measure(lake, sources)))


if __name__ == "__main__":
    main()
