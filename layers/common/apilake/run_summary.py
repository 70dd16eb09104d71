"""A run's summary: the run report's figures, one line per source, for SQL over every run.

Stored with the report (:func:`apilake.report.store_report`: written when the report is, rewritten only when
it is) as NDJSON at ``ledger/summary/run=<R>.json`` (:func:`summary_key`; only summaries under
``ledger/summary/``). The Glue table ``run_summary`` (template.yaml, OpenX JSON SerDe) reads them with the
columns :func:`glue_columns` derives from :class:`SourceSummary`, and the view ``apilake_runs``
(:func:`apilake.curated.create_runs_view`) orders them, newest run first. Locally ``apilake query`` reads the
lake folder's copies under the same names.

The names are the report's (``pages_missing``, ``dlq_depth``, ...), its nested latency flattened
(``latency_ms_p50``); ``schema_drift_fields`` is the completeness metric's (None: not judged). Times are UTC
in the form Athena's SerDe and DuckDB both read as a timestamp (``2026-11-26 01:00:00.000``).
"""

from __future__ import annotations

import types
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, field_serializer

from apilake.ledger import LEDGER_PREFIX

if TYPE_CHECKING:
    from apilake.report import RunReport

SUMMARY_PREFIX = f"{LEDGER_PREFIX}/summary/"
# A field's Python type -> its Glue (Hive) column type.
GLUE_TYPES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "bigint",
    float: "double",
    datetime: "timestamp",
    date: "date",
}


def summary_key(run_id: str) -> str:
    """``ledger/summary/run=<R>.json``: the run's summary in the lake bucket (and the local lake folder)."""
    return f"{SUMMARY_PREFIX}run={run_id}.json"


class SourceSummary(BaseModel):
    """A source's figures in a run, as its run report has them."""

    # defer_build: built at first use; the worker imports this model and never uses it (decision 100).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    run_id: str
    trigger: Literal["schedule", "manual"]
    ingestion_date: date
    created_at: datetime
    source: str
    complete: bool  # the source's
    run_complete: bool  # every source of the run
    pages_expected: int | None  # None: a chain that has not ended
    pages_landed: int
    pages_missing: int
    pages_unchanged: int
    records: int
    bytes: int
    requests: int
    retries: int
    throttled: int
    parked_pages: int
    parks: int
    dlq_depth: int | None  # None: not known
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    latency_ms_p99: float | None
    schema_drift_fields: int | None  # new + missing + changed fields; None: not judged (no columns, or not noted)
    generated_at: datetime

    @field_serializer("created_at", "generated_at")
    def _athena_timestamp(self, moment: datetime) -> str:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment
        return utc.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def summaries(report: RunReport) -> list[SourceSummary]:
    """The report's summary: a line per source, in the report's order."""
    return [
        SourceSummary(
            run_id=report.run_id,
            trigger=report.trigger,
            ingestion_date=date.fromisoformat(report.ingestion_date),
            created_at=report.created_at,
            source=source.source,
            complete=source.complete,
            run_complete=report.complete,
            pages_expected=source.pages_expected,
            pages_landed=source.pages_landed,
            pages_missing=source.pages_missing,
            pages_unchanged=source.pages_unchanged,
            records=source.records,
            bytes=source.bytes,
            requests=source.requests,
            retries=source.retries,
            throttled=source.throttled,
            parked_pages=source.parked_pages,
            parks=source.parks,
            dlq_depth=source.dlq_depth,
            latency_ms_p50=source.latency_ms.p50,
            latency_ms_p90=source.latency_ms.p90,
            latency_ms_p99=source.latency_ms.p99,
            schema_drift_fields=source.drift.fields if source.drift is not None and source.drift.judged else None,
            generated_at=report.generated_at,
        )
        for source in report.sources
    ]


def summary_body(report: RunReport) -> str:
    """The report's summary as NDJSON: one JSON object a line, each ending with a newline."""
    return "".join(line.model_dump_json() + "\n" for line in summaries(report))


def glue_type(annotation: object) -> str:
    """A field's annotation as its Glue type (``X | None`` as X's: every column may be NULL; a ``Literal`` as
    its values' type)."""
    kinds: set[object] = {annotation}
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = {arg for arg in get_args(annotation) if arg is not type(None)}
    if len(kinds) == 1 and get_origin(next(iter(kinds))) is Literal:
        kinds = {type(arg) for arg in get_args(next(iter(kinds)))}
    (kind,) = kinds if len(kinds) == 1 else (None,)
    if not isinstance(kind, type) or kind not in GLUE_TYPES:
        raise TypeError(f"SourceSummary: no Glue type for {annotation!r} (one of {', '.join(map(str, GLUE_TYPES))})")
    return GLUE_TYPES[kind]


def glue_columns() -> list[tuple[str, str]]:
    """The ``run_summary`` table's columns, (name, Glue type), in :class:`SourceSummary`'s order."""
    return [(name, glue_type(field.annotation)) for name, field in SourceSummary.model_fields.items()]
