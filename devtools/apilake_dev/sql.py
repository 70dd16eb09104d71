"""The latest version of each record, one SQL definition per source: Athena's (Trino) and DuckDB's.

Incremental overlap, redelivery and every full reload land the same record again, so ``source_api_b``
holds one row per landing. ``source_api_b_current`` holds one row per record id (``record_id_path``):
the one landed last, by ingestion date, then shard, then page (the row's object key: Athena's hidden
``"$path"`` column, DuckDB's ``filename``). Rows without an id are all kept. A source without
``record_id_path`` has no such view.

The statement is written once, in Athena's dialect (:func:`create_current_view`); the template's named
query holds it as it is, and the local DuckDB view is the same statement transpiled by sqlglot
(:func:`local_current_view`). The outer ``SELECT *`` keeps ``version_rank`` (always 1): Trino has no
``EXCLUDE``. A source with ``columns`` has its ``_current`` view over the curated table instead
(``apilake.curated``); :func:`to_duckdb` transpiles those statements too.
"""

from __future__ import annotations

from apilake.config import Source
from apilake.names import table_name

ATHENA = "athena"  # sqlglot: Trino for queries and views, Hive for DDL, as Athena engine 3
DUCKDB = "duckdb"
RANK = "version_rank"
PATH = "$path"  # Athena's hidden column: the S3 object a row was read from
LOCAL_PATH = "filename"  # DuckDB's read_json(..., filename=true) column: the same, as a local path
_ALIAS = "t"


def current_view_name(source: str) -> str:
    """``api-b`` -> ``source_api_b_current``: the view of the latest version of each of the source's records."""
    return f"{table_name(source)}_current"


def id_expression(record_id_path: str) -> str:
    """``customer.id`` -> ``t."customer"."id"``: the record's id as a column, or a field of a struct column."""
    return ".".join([_ALIAS, *(f'"{part}"' for part in record_id_path.split("."))])


def current_select(source: Source) -> str | None:
    """The latest version of each of the source's records, in Athena's SQL; None without ``record_id_path``."""
    if not source.record_id_path:
        return None
    record_id = id_expression(source.record_id_path)
    # Newest landing first: a later ingestion date, then (the same day) a later shard, then a later page.
    # A record without an id is its own latest version (rank 1).
    newest = f'{_ALIAS}.ingestion_date DESC, {_ALIAS}.shard DESC, {_ALIAS}."{PATH}" DESC'
    return (
        f"SELECT * FROM (\n"
        f"  SELECT {_ALIAS}.*,\n"
        f"    CASE WHEN {record_id} IS NULL THEN 1\n"
        f"      ELSE row_number() OVER (PARTITION BY {record_id} ORDER BY {newest}) END AS {RANK}\n"
        f"  FROM {table_name(source.name)} AS {_ALIAS}\n"
        f") WHERE {RANK} = 1"
    )


def create_current_view(source: Source) -> str | None:
    """``CREATE OR REPLACE VIEW source_<name>_current AS ...`` in Athena's SQL; None without ``record_id_path``."""
    select = current_select(source)
    if select is None:
        return None
    return f"CREATE OR REPLACE VIEW {current_view_name(source.name)} AS\n{select}\n"


def to_duckdb(statement: str) -> str:
    """An Athena (Trino) statement as DuckDB's, by sqlglot, with one function made to mean what it means in Trino:
    ``json_extract_scalar`` of an object or array is NULL there (DuckDB's ``->>`` would give its JSON text)."""
    import sqlglot
    from sqlglot import exp

    def scalar_only(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.JSONExtractScalar):
            return node
        document, path = node.this.sql(dialect=DUCKDB), node.expression.sql(dialect=DUCKDB)
        return sqlglot.parse_one(
            f"CASE WHEN json_type({document}, {path}) IN ('OBJECT', 'ARRAY') THEN NULL "
            f"ELSE {node.sql(dialect=DUCKDB)} END",
            read=DUCKDB,
        )

    return sqlglot.parse_one(statement, read=ATHENA).transform(scalar_only).sql(dialect=DUCKDB)


def duckdb_type(glue: str) -> str:
    """A Glue (Hive) column type as DuckDB's: ``string`` -> ``TEXT``, ``bigint`` -> ``BIGINT``."""
    from sqlglot import exp

    return exp.DataType.build(glue, dialect="hive").sql(dialect=DUCKDB)


def local_current_view(source: Source, reader: str) -> str | None:
    """:func:`create_current_view` for DuckDB: transpiled, reading the source's pages through ``reader`` (a
    ``read_json(...)`` call with ``filename=true``) in place of the table, ``filename`` for ``"$path"``, and
    ``filename`` left out of the view's columns (Athena's ``SELECT *`` leaves ``"$path"`` out too)."""
    import sqlglot  # here: the template's generator needs only the Athena statement
    from sqlglot import exp

    statement = create_current_view(source)
    if statement is None:
        return None
    tree = sqlglot.parse_one(statement, read=ATHENA)
    pages = sqlglot.parse_one(f"SELECT * FROM {reader} AS {_ALIAS}", read=DUCKDB).find(exp.Table)
    assert pages is not None
    table = table_name(source.name)

    def local(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name == table:
            return pages.copy()
        if isinstance(node, exp.Column) and node.name == PATH:
            return exp.column(LOCAL_PATH, table=_ALIAS)
        return node

    tree = tree.transform(local)
    outer = tree.expression  # the view's query: SELECT * FROM (...) WHERE version_rank = 1
    everything_but_path = sqlglot.parse_one(f"SELECT * EXCLUDE ({LOCAL_PATH}) FROM {table}", read=DUCKDB).expressions
    outer.set("expressions", everything_but_path)
    return tree.sql(dialect=DUCKDB)
