"""The curated zone on this machine: DuckDB runs apilake.curated's statements, transpiled, over the lake folder.

``source_<x>_lines`` reads the raw pages as Athena's text table does (one ``line`` per record, the
``ingestion_date`` from the key, ``"$path"`` the file, ``"$file_modified_time"`` its mtime); each (source,
ingestion date) is written to ``<lake>/curated/source=<name>/ingestion_date=<D>/data.parquet`` (ZSTD),
recomputed from all of the date's raw pages whenever it is missing, older than one of them, or of other
columns than the sources file declares (an accepted change of ``columns``). ``source_<x>_curated`` reads
those files back with the partition from the folder's name, and the ``_current`` and ``_recent`` views are
Athena's statements transpiled.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from apilake import curated
from apilake.config import Source
from apilake.lake import source_prefix
from apilake_dev.sql import to_duckdb

DATA_FILE = "data.parquet"
FILE_COLUMN = curated.PATH  # no declared column can be named so (config: [a-z_][a-z0-9_]*)


def raw_folder(lake: Path, source: str) -> Path:
    return lake / source_prefix(source)


def curated_folder(lake: Path, source: str, ingestion_date: date | str | None = None) -> Path:
    """``<lake>/curated/source=<name>/``, or the date's folder under it."""
    if ingestion_date is None:
        return lake / curated.CURATED_PREFIX / f"source={source}"
    return lake / curated.curated_prefix(source, ingestion_date)


def raw_dates(lake: Path, source: str) -> list[date]:
    """The ingestion dates with pages of the source in the lake folder."""
    found = []
    for folder in sorted(raw_folder(lake, source).glob(f"{curated.PARTITION}=*")):
        if any(folder.rglob("*.json.gz")):
            found.append(date.fromisoformat(folder.name.partition("=")[2]))
    return found


def connect() -> duckdb.DuckDBPyConnection:
    """DuckDB as Athena's session: dates and ``current_date`` in UTC."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def create_lines_view(connection: duckdb.DuckDBPyConnection, lake: Path, source: str) -> None:
    """``source_<x>_lines`` over the source's raw pages (they must exist)."""
    glob = _literal((raw_folder(lake, source) / "*" / "*" / "*.json.gz").as_posix())
    # "$file_modified_time": the file's mtime (read_blob reads no content for it; the mirror of a bucket keeps
    # each object's LastModified as its mtime, apilake_cli.lakefolder)
    connection.execute(
        f'CREATE OR REPLACE VIEW "{curated.lines_table(source)}" AS '
        f'SELECT CAST(l.json AS VARCHAR) AS {curated.LINE}, l.{curated.PARTITION}, l."{curated.PATH}", '
        f'f.last_modified AS "{curated.MODIFIED}" '
        f"FROM read_json_objects({glob}, format = 'newline_delimited', filename = '{curated.PATH}', "
        f"hive_partitioning = true, hive_types = {{'{curated.PARTITION}': 'DATE', 'shard': 'VARCHAR'}}) AS l "
        f'JOIN read_blob({glob}) AS f ON f.filename = l."{curated.PATH}"'
    )


def create_curated_views(connection: duckdb.DuckDBPyConnection, lake: Path, source: Source) -> list[str]:
    """``source_<x>_curated`` over the source's Parquet files, then its ``_current`` and ``_recent`` views;
    the names created (none without curated files)."""
    files = sorted(curated_folder(lake, source.name).glob(f"*/{DATA_FILE}"))
    if not files:
        return []
    glob = (curated_folder(lake, source.name) / "*" / DATA_FILE).as_posix()
    connection.execute(
        f'CREATE OR REPLACE VIEW "{curated.curated_table(source.name)}" AS '
        f'SELECT * EXCLUDE ("{FILE_COLUMN}"), '
        f"CAST(regexp_extract(\"{FILE_COLUMN}\", '{curated.PARTITION}=([0-9-]+)/', 1) AS DATE) AS {curated.PARTITION} "
        f"FROM read_parquet({_literal(glob)}, filename = '{FILE_COLUMN}', hive_partitioning = false, "
        f"union_by_name = true)"
    )
    created = [curated.curated_table(source.name)]
    current = curated.create_current_view(source)
    if current is not None:
        connection.execute(to_duckdb(current))
        created.append(curated.current_view(source.name))
    connection.execute(to_duckdb(curated.create_recent_view(source)))
    return [*created, curated.recent_view(source.name)]


@dataclass
class Curated:
    """One (source, ingestion date) written: its rows, and where."""

    source: str
    ingestion_date: date
    rows: int
    path: Path


def curate_date(
    connection: duckdb.DuckDBPyConnection, lake: Path, source: Source, ingestion_date: date | str
) -> Curated:
    """Recompute one ingestion date's curated file from all of its raw pages (the lines view must exist):
    the folder is emptied first, the file written under a temporary name, then renamed."""
    folder = curated_folder(lake, source.name, ingestion_date)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    partial = folder / f".{DATA_FILE}.partial"
    select = to_duckdb(curated.curate_select(source, ingestion_date))
    # Sorted, so the same raw pages give the same file.
    connection.execute(
        f"COPY (SELECT * FROM ({select}) ORDER BY ALL) TO {_literal(partial.as_posix())} "
        f"(FORMAT parquet, COMPRESSION zstd)"
    )
    partial.replace(folder / DATA_FILE)
    rows = connection.execute(f"SELECT count(*) FROM read_parquet({_literal((folder / DATA_FILE).as_posix())})")
    found = rows.fetchone()
    return Curated(source.name, curated.as_date(ingestion_date), int(found[0]) if found else 0, folder / DATA_FILE)


def is_stale(connection: duckdb.DuckDBPyConnection, lake: Path, source: Source, ingestion_date: date) -> bool:
    """The date's curated file is missing, older than one of its raw pages, or of other columns or types
    than the curation would write now."""
    data = curated_folder(lake, source.name, ingestion_date) / DATA_FILE
    if not data.exists():
        return True
    pages = (raw_folder(lake, source.name) / f"{curated.PARTITION}={ingestion_date.isoformat()}").rglob("*.json.gz")
    written = data.stat().st_mtime
    if any(page.stat().st_mtime > written for page in pages):
        return True
    select = to_duckdb(curated.curate_select(source, ingestion_date))
    wanted = connection.execute(f"DESCRIBE {select}").fetchall()
    found = connection.execute(
        f"DESCRIBE SELECT * FROM read_parquet({_literal(data.as_posix())}, hive_partitioning = false)"
    ).fetchall()
    return [_column(row) for row in wanted] != [_column(row) for row in found]


def _column(described: tuple[Any, ...]) -> tuple[str, str]:
    """A DESCRIBE row's name and type, as Parquet keeps it (a timestamp(3) reads back as a TIMESTAMP)."""
    name, kind = described[0], described[1]
    return str(name), "TIMESTAMP" if kind == "TIMESTAMP_MS" else str(kind)


def curate_lake(
    lake: Path, sources: Iterable[Source], dates: Sequence[date] | None = None, everything: bool = False
) -> list[Curated]:
    """Curate each source with ``columns`` and pages in the lake folder: its stale dates (every date with
    ``everything``), and ``dates`` whatever their state; what was written."""
    written: list[Curated] = []
    connection = connect()
    try:
        for source in sources:
            if not source.columns:
                continue
            landed = raw_dates(lake, source.name)
            if not landed:
                continue
            create_lines_view(connection, lake, source.name)
            for day in landed:
                if everything or day in (dates or ()) or is_stale(connection, lake, source, day):
                    written.append(curate_date(connection, lake, source, day))
    finally:
        connection.close()
    return written


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in folder.rglob(pattern)) if folder.exists() else 0


def zone_bytes(lake: Path, sources: Iterable[str]) -> list[tuple[str, int, int]]:
    """(source, raw bytes, curated bytes) for each source: the gzip NDJSON pages and the Parquet files."""
    return [
        (name, folder_bytes(raw_folder(lake, name), "*.json.gz"), folder_bytes(curated_folder(lake, name), DATA_FILE))
        for name in sources
    ]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
