"""What the region's Glue tables and schema-drift alarm need to know about a source that declares ``columns``.

Per such source the region gets two tables in the stack's Glue database, both with Athena partition
projection on ``ingestion_date`` (no crawler, no ``MSCK REPAIR``: a new day is queryable as soon as it lands):
the raw pages as text, one JSON record per row (``source_<x>_lines``, what the curation reads), and the
curated Parquet (``source_<x>_curated``, the declared columns with their Glue types); and, behind the
``AlarmOnSchemaDrift`` parameter, an alarm on the completeness check's ``schema_drift_fields`` for it.
"""

from __future__ import annotations

from typing import Any

from apilake import curated
from apilake.config import ColumnType, Source, column_name
from apilake.curated import CURATED_PREFIX, LINE, PARTITION, curated_table, lines_table
from apilake.lake import source_prefix
from apilake_dev import sql

FIRST_DATE = "2020-01-01"  # the projection's first day: nothing was landed before it
# A declared type -> the Glue (Hive) column type Athena reads the curated Parquet with; json is JSON text.
GLUE_TYPES: dict[ColumnType, str] = {
    ColumnType.STRING: "string",
    ColumnType.BIGINT: "bigint",
    ColumnType.DOUBLE: "double",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.DATE: "date",
    ColumnType.JSON: "string",
}


def curated_source_prefix(source: str) -> str:
    """``curated/source=<name>/``: where the source's curated partitions are written (one folder per date)."""
    return f"{CURATED_PREFIX}source={source}/"


def projection(prefix: str) -> dict[str, str]:
    """The table parameters that make Athena compute the ``ingestion_date`` partitions from the date alone: one
    a day from :data:`FIRST_DATE` to today, at ``<prefix>ingestion_date=<yyyy-MM-dd>/`` of the lake
    (``${LakeBucket}`` for ``Fn::Sub``; ``${!...}`` is a literal ``${...}``, Athena's placeholder)."""
    return {
        "projection.enabled": "true",
        f"projection.{PARTITION}.type": "date",
        f"projection.{PARTITION}.format": "yyyy-MM-dd",
        f"projection.{PARTITION}.range": f"{FIRST_DATE},NOW",
        f"projection.{PARTITION}.interval": "1",
        f"projection.{PARTITION}.interval.unit": "DAYS",
        "storage.location.template": f"s3://${{LakeBucket}}/{prefix}{PARTITION}=${{!{PARTITION}}}/",
    }


def tables_context(source: Source) -> dict[str, Any] | None:
    """The source's two tables (names, locations, columns, projection); None without ``columns`` (raw only)."""
    if source.columns is None:
        return None
    raw, curated = source_prefix(source.name), curated_source_prefix(source.name)
    return {
        "partition": PARTITION,
        "lines": {"name": lines_table(source.name), "prefix": raw, "projection": projection(raw), "column": LINE},
        "curated": {
            "name": curated_table(source.name),
            "prefix": curated,
            "projection": projection(curated),
            "columns": [(column_name(field), GLUE_TYPES[kind]) for field, kind in source.columns.items()],
        },
    }


def view_queries(source: Source) -> list[dict[str, str]]:
    """The Athena named queries that create the source's views (the operator runs each once, and again when the
    source's columns change): with ``columns``, the curated ``_current`` (when the id's field is declared) and
    ``_recent``; without, decision 27's ``_current`` over the crawler's raw table (when it has an id)."""
    if source.columns is None:
        statements = [("Current", "the latest version of each record", sql.create_current_view(source))]
    else:
        statements = [
            ("Current", "the latest version of each record", curated.create_current_view(source)),
            (
                "Recent",
                f"the latest version of each record landed in the last {source.curated.recent_days} days",
                curated.create_recent_view(source),
            ),
        ]
    return [
        {"id": f"{kind}ViewQuery", "name": f"{source.name}-{kind.lower()}", "says": says, "sql": statement}
        for kind, says, statement in statements
        if statement is not None
    ]
