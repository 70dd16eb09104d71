"""The curated zone: each source with ``columns`` as typed Parquet, one row per record id and ingestion date.

One definition of the SQL, in Athena's dialect (Trino), written here and nowhere else:

- ``source_<x>_lines``: the raw zone as text, one varchar column ``line`` (a record's JSON), the partition
  ``ingestion_date`` (a date) and Athena's hidden ``"$path"`` and ``"$file_modified_time"`` (the object a
  line was read from, and when it was written).
- :func:`curate_select`: one ingestion date's lines as the declared columns, each value extracted from the
  record and cast to its pinned type; a value of another type (a vendor's change not yet accepted in the
  sources file) is NULL, so the curated table keeps its types. One row per record id (``record_id_path``):
  the one fetched last that day (the object written last: ``"$file_modified_time"``, then the later
  ``"$path"``); rows without an id are all kept.
- :func:`unload_statement`: that SELECT written as Parquet (ZSTD) on AWS, into an empty prefix whose files
  then replace :func:`curated_prefix`'s (apilake.curation): a date's partition is recomputed from all of the
  date's raw pages, so running it twice gives the same partition. Locally, DuckDB runs the same SELECT
  transpiled by sqlglot (``devtools/apilake_dev/curate.py``).
- ``source_<x>_current`` (:func:`create_current_view`): one row per record id over every date, the newest
  ingestion date's; ``source_<x>_recent`` (:func:`create_recent_view`): the same over the last
  ``curated.recent_days`` ingestion dates up to today (each record landed then, once, its latest version;
  every version of those dates is ``source_<x>_curated`` with an ``ingestion_date`` filter).

The casts are written so that Trino and DuckDB agree on which values are of the pinned type: integers, dates
and timestamps by their text's shape (:data:`TEXT_PATTERNS`, which the worker's drift checks too), booleans by
JSON's literals; a timestamp's offset is converted to UTC by text functions, not either engine's parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from apilake.config import ColumnType, Source, column_name
from apilake.exceptions import ConfigError
from apilake.names import table_name
from apilake.records import TextKinds

CURATED_PREFIX = "curated/"
PATH = "$path"  # Athena's hidden column: the S3 object a row was read from
MODIFIED = "$file_modified_time"  # Athena's hidden column: when that object was written (locally: its mtime)
LINE = "line"
RANK = "version_rank"
PARTITION = "ingestion_date"
LINES_ALIAS = "l"
CURATED_ALIAS = "c"

# A declared type (``columns:``) -> the curated table's Trino type (Glue's: see the template's generator).
COLUMN_TYPES: dict[ColumnType, str] = {
    ColumnType.STRING: "varchar",
    ColumnType.BIGINT: "bigint",
    ColumnType.DOUBLE: "double",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamp(3)",
    ColumnType.DATE: "date",
    ColumnType.JSON: "varchar",
}


def lines_table(name: str) -> str:
    """``api-b`` -> ``source_api_b_lines``: the raw zone's records as JSON text, one per row."""
    return f"{table_name(name)}_lines"


def curated_table(name: str) -> str:
    """``api-b`` -> ``source_api_b_curated``: the declared columns, one row per record id and ingestion date."""
    return f"{table_name(name)}_curated"


def current_view(name: str) -> str:
    """``api-b`` -> ``source_api_b_current``: the latest version of each record across ingestion dates."""
    return f"{table_name(name)}_current"


def recent_view(name: str) -> str:
    """``api-b`` -> ``source_api_b_recent``: the curated rows of the last ``recent_days`` days."""
    return f"{table_name(name)}_recent"


def curated_prefix(name: str, ingestion_date: date | str) -> str:
    """Where a source's ingestion date lands in the curated zone: ``curated/source=<name>/ingestion_date=<D>/``."""
    return f"{CURATED_PREFIX}source={name}/{PARTITION}={as_date(ingestion_date).isoformat()}/"


def as_date(value: date | str) -> date:
    """An ingestion date as given (a date, or its YYYY-MM-DD text)."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"ingestion date {value!r}: expected YYYY-MM-DD") from None


def _columns(source: Source) -> dict[str, ColumnType]:
    if not source.columns:
        raise ConfigError(f"source {source.name!r}: no columns declared, so no curated table (raw only)")
    return source.columns


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _json_path(path: str) -> str:
    """``customer.id`` -> ``'$.customer.id'``: a field of the record (its names are identifiers: config)."""
    return "'$." + path.replace("'", "''") + "'"


# The text a declared bigint, date or timestamp takes, the same in Athena, DuckDB and the worker's drift
# (apilake.drift): anything else is NULL in the curated table and a changed type in the drift.
# Timestamps: ISO 8601 with seconds, 'T' or a space, any fraction (its first 3 digits kept), 'Z', an offset
# (converted to UTC) or none (UTC); hours 00-23. A date's or time's impossible values (02-30) are NULL too.
_DAY = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_OFFSET = "[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]"
TEXT_PATTERNS: dict[ColumnType, str] = {
    ColumnType.BIGINT: "-?[0-9]{1,19}",  # 19 digits may overflow: NULL (TRY_CAST) in both engines
    ColumnType.DATE: _DAY,
    ColumnType.TIMESTAMP: f"{_DAY}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]((?:\\.[0-9]+)?)((?:Z|{_OFFSET})?)",
}
_FRACTION, _ZONE = 1, 2  # the timestamp pattern's groups (always matched, maybe empty: '' in both engines)
# A string of the shape the curation casts, by declared type -> the kind the worker's drift notes it as.
_TEXT_KIND = {ColumnType.BIGINT: "integer", ColumnType.DATE: "date", ColumnType.TIMESTAMP: "timestamp"}
_ACCEPTS = {kind: re.compile(pattern).fullmatch for kind, pattern in TEXT_PATTERNS.items()}


def text_kinds(columns: Mapping[str, ColumnType] | None) -> TextKinds:
    """What the worker checks of a source's strings (:class:`apilake.records.FieldKinds`): each field declared
    a timestamp, date or bigint -> the check of the curation's pattern, and the kind noted when it passes
    (apilake.drift judges what was noted)."""
    return {field: (_ACCEPTS[kind], _TEXT_KIND[kind]) for field, kind in (columns or {}).items() if kind in _TEXT_KIND}


def _regex(kind: ColumnType) -> str:
    """The whole text, anchored (``\\z``: Trino's ``$`` also matches before a final newline, RE2's does not)."""
    return f"'^(?:{TEXT_PATTERNS[kind]})\\z'"


def _timestamp(text: str) -> str:
    """An ISO 8601 text matching :data:`TEXT_PATTERNS` as a UTC ``timestamp(3)``, by plain text functions both
    engines read alike (no zone or ISO parser of either)."""
    regex = _regex(ColumnType.TIMESTAMP)
    fraction = f"substr(regexp_extract({text}, {regex}, {_FRACTION}), 1, 4)"  # '.123' of '.123456'
    zone = f"regexp_extract({text}, {regex}, {_ZONE})"
    minutes = (
        f"CASE WHEN length({zone}) = 6 THEN (CASE WHEN substr({zone}, 1, 1) = '-' THEN -1 ELSE 1 END)"
        f" * (CAST(substr({zone}, 2, 2) AS integer) * 60 + CAST(substr({zone}, 5, 2) AS integer)) ELSE 0 END"
    )
    local = f"TRY_CAST(substr({text}, 1, 10) || ' ' || substr({text}, 12, 8) || {fraction} AS timestamp(3))"
    return f"CASE WHEN regexp_like({text}, {regex}) THEN date_add('minute', -({minutes}), {local}) END"


def extract(field: str, kind: ColumnType, line: str = f"{LINES_ALIAS}.{LINE}") -> str:
    """The value of the record's top-level ``field`` as the pinned ``kind``; NULL when it is of another type."""
    kind, path = ColumnType(kind), _json_path(field)
    text = f"json_extract_scalar({line}, {path})"  # a scalar's text; NULL for an object, an array or null
    if kind is ColumnType.STRING:
        return text
    if kind is ColumnType.JSON:  # anything, as JSON text; JSON's null is SQL's NULL
        return f"NULLIF(json_format(json_extract({line}, {path})), 'null')"
    if kind is ColumnType.BIGINT:
        return f"CASE WHEN regexp_like({text}, {_regex(kind)}) THEN TRY_CAST({text} AS bigint) END"
    if kind is ColumnType.DOUBLE:
        return f"TRY_CAST({text} AS double)"
    if kind is ColumnType.BOOLEAN:
        return f"CASE {text} WHEN 'true' THEN true WHEN 'false' THEN false END"
    if kind is ColumnType.DATE:
        return f"CASE WHEN regexp_like({text}, {_regex(kind)}) THEN TRY_CAST({text} AS date) END"
    return _timestamp(text)


def curate_select(source: Source, ingestion_date: date | str) -> str:
    """One ingestion date of ``source_<x>_lines`` as the declared columns, one row per record id (Trino SQL)."""
    columns = _columns(source)
    day = as_date(ingestion_date).isoformat()
    names = [_quoted(column_name(field)) for field in columns]
    values = ",\n    ".join(
        f"{extract(field, kind)} AS {_quoted(column_name(field))}" for field, kind in columns.items()
    )
    where = f"WHERE {LINES_ALIAS}.{PARTITION} = DATE '{day}'"
    lines = f"FROM {lines_table(source.name)} AS {LINES_ALIAS}\n  {where}"
    if not source.record_id_path:
        return f"SELECT\n    {values}\n  {lines}"
    record_id = f"json_extract_scalar({LINES_ALIAS}.{LINE}, {_json_path(source.record_id_path)})"
    # The latest fetched of each id that day: the object written last (shard names do not sort: since-999 and
    # since-1000), then the later object key (the later page of a shard), then the line itself (a record seen
    # twice on one page), so every run picks the same row.
    latest = f'{LINES_ALIAS}."{MODIFIED}" DESC, {LINES_ALIAS}."{PATH}" DESC, {LINES_ALIAS}.{LINE} DESC'
    return (
        f"SELECT {', '.join(names)} FROM (\n"
        f"  SELECT\n    {values},\n"
        f"    CASE WHEN {record_id} IS NULL THEN 1\n"
        f"      ELSE row_number() OVER (PARTITION BY {record_id} ORDER BY {latest}) END AS {RANK}\n"
        f"  {lines}\n"
        f") WHERE {RANK} = 1"
    )


def unload_statement(source: Source, ingestion_date: date | str, bucket: str, prefix: str | None = None) -> str:
    """Athena's ``UNLOAD`` of :func:`curate_select` to ``prefix`` (an empty one: UNLOAD refuses to write into a
    prefix with objects), by default the date's curated prefix."""
    location = f"s3://{bucket}/{prefix or curated_prefix(source.name, ingestion_date)}"
    return (
        f"UNLOAD ({curate_select(source, ingestion_date)})\n"
        f"TO '{location}'\nWITH (format = 'PARQUET', compression = 'ZSTD')"
    )


def _id_column(source: Source) -> str | None:
    """The record id as an expression over the curated table: its column, or a field of its json column (the
    sources file refuses an id that is neither); None without ``record_id_path``."""
    if not source.record_id_path:
        return None
    first, _, rest = source.record_id_path.partition(".")
    column = f"{CURATED_ALIAS}.{_quoted(column_name(first))}"
    return f"json_extract_scalar({column}, {_json_path(rest)})" if rest else column


def _latest_select(source: Source, where: str = "") -> str:
    """The curated rows (``where`` filters them first: a partition filter prunes dates) as one row per record
    id, the newest ingestion date's; every row without ``record_id_path`` (Trino SQL)."""
    _columns(source)
    table = f"{curated_table(source.name)} AS {CURATED_ALIAS}{where}"
    record_id = _id_column(source)
    if record_id is None:
        return f"SELECT {CURATED_ALIAS}.* FROM {table}"
    names = ", ".join([*(_quoted(name) for name in source.column_names().values()), PARTITION])
    return (
        f"SELECT {names} FROM (\n"
        f"  SELECT {CURATED_ALIAS}.*,\n"
        f"    CASE WHEN {record_id} IS NULL THEN 1\n"
        f"      ELSE row_number() OVER (PARTITION BY {record_id} ORDER BY {CURATED_ALIAS}.{PARTITION} DESC) END"
        f" AS {RANK}\n"
        f"  FROM {table}\n"
        f") WHERE {RANK} = 1"
    )


def current_select(source: Source) -> str | None:
    """The latest version of each record (the newest ingestion date's), Trino SQL; None without
    ``record_id_path``."""
    return _latest_select(source) if source.record_id_path else None


def create_current_view(source: Source) -> str | None:
    """``CREATE OR REPLACE VIEW source_<x>_current AS ...``; None when :func:`current_select` is."""
    select = current_select(source)
    return None if select is None else f"CREATE OR REPLACE VIEW {current_view(source.name)} AS\n{select}"


def recent_select(source: Source) -> str:
    """The records landed in the last ``curated.recent_days`` ingestion dates, today's included, each once: its
    latest version (as ``_current``, over those dates only; every row without ``record_id_path``), Trino SQL."""
    days = source.curated.recent_days
    return _latest_select(source, f"\n  WHERE {CURATED_ALIAS}.{PARTITION} > current_date - INTERVAL '{days}' DAY")


def create_recent_view(source: Source) -> str:
    """``CREATE OR REPLACE VIEW source_<x>_recent AS ...``."""
    return f"CREATE OR REPLACE VIEW {recent_view(source.name)} AS\n{recent_select(source)}"


def statements(source: Source, ingestion_date: date | str, bucket: str) -> list[str]:
    """Every statement of a source's curated zone for one ingestion date: the UNLOAD, then the views."""
    current = create_current_view(source)
    return [
        unload_statement(source, ingestion_date, bucket),
        *([current] if current else []),
        create_recent_view(source),
    ]


# -- every run: the run summaries (apilake.run_summary) as one view ---------------------------------------------
RUN_SUMMARY_TABLE = "run_summary"  # the Glue table over ledger/summary/ (template.yaml)
RUNS_VIEW = "apilake_runs"
RUN_RANK = "run_rank"  # 1: the source's newest run, 2 the one before, ...


def runs_select() -> str:
    """Every run's figures, a row per run and source, the newest run first (Trino SQL over ``run_summary``), and
    ``run_rank``: 1 for each source's newest run (Trino drops a view's ORDER BY once the view is a subquery of
    another query: ``WHERE run_rank = 1`` stays right)."""
    from apilake.run_summary import SourceSummary  # here: the worker imports this module (TEXT_PATTERNS), not it

    names = ", ".join(_quoted(name) for name in SourceSummary.model_fields)
    newest = "created_at DESC, run_id DESC"
    return (
        f"SELECT {names},\n  row_number() OVER (PARTITION BY source ORDER BY {newest}) AS {RUN_RANK}\n"
        f"FROM {RUN_SUMMARY_TABLE}\nORDER BY {newest}, source"
    )


def create_runs_view() -> str:
    """``CREATE OR REPLACE VIEW apilake_runs AS ...``: one view for every source, created once."""
    return f"CREATE OR REPLACE VIEW {RUNS_VIEW} AS\n{runs_select()}"
