"""Schema drift: what a run's records hold against the pinned schema, the source's ``columns``.

The worker notes, for each page of a source with ``columns``, the JSON kinds each top-level field of its
records had (:class:`apilake.records.FieldKinds`, the landed marker's ``fields``). A run's fields are the union
over its landed pages, and compared with the declared columns:

- **new**: a field seen with a value that is not declared (the curated table leaves it out until it is);
- **missing**: a declared field never seen with a value (absent, or null only), in a run that landed records;
- **changed**: a declared field seen with a kind its type cannot hold (:data:`FITS`): the curated column is
  NULL for those values (``TRY_CAST``), until the change is accepted. A string of a field declared a
  timestamp, date or bigint is noted ``timestamp``, ``date`` or ``integer`` when its text has the shape the
  curation casts (:data:`apilake.curated.TEXT_PATTERNS`, :func:`text_kinds`), else ``string``: a changed
  type (``26/11/2026`` for a date).

Accepting drift is changing ``columns`` in the sources file (``apilake schema infer`` prints what the lake
holds). Pages landed before the worker noted fields are counted, not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from apilake.config import ColumnType, Source, SourcesFile
from apilake.curated import text_kinds as text_kinds  # importable from here too, as before
from apilake.ledger import LandedPage, RunStatus
from apilake.records import KINDS

# The kinds each declared type takes without losing the value (null fits every type).
FITS: dict[ColumnType, frozenset[str]] = {
    ColumnType.STRING: frozenset({"string", "timestamp", "date", "integer", "number", "boolean"}),  # as text
    ColumnType.BIGINT: frozenset({"integer"}),  # a number, or its digits as a string
    ColumnType.DOUBLE: frozenset({"integer", "number"}),
    ColumnType.BOOLEAN: frozenset({"boolean"}),
    ColumnType.TIMESTAMP: frozenset({"timestamp"}),  # a string of TEXT_PATTERNS' shape
    ColumnType.DATE: frozenset({"date"}),
    ColumnType.JSON: frozenset(KINDS),
}


class _Model(BaseModel):
    # defer_build: built at first use; the worker imports these models and never uses them (decision 100).
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ChangedField(_Model):
    field: str
    declared: ColumnType
    seen: list[str]  # every kind seen, those that fit included


class SourceDrift(_Model):
    """A source's fields in a run, against its declared columns."""

    pages_observed: int  # landed pages whose fields the worker noted
    pages_unobserved: int  # landed before it did (not judged)
    records_observed: int
    observed: dict[str, list[str]]  # every field seen -> its kinds (in KINDS' order)
    new: dict[str, list[str]]  # field -> kinds seen
    missing: dict[str, ColumnType]  # field -> its declared type
    changed: list[ChangedField]

    @property
    def fields(self) -> int:
        """How many fields drifted: the completeness check's ``schema_drift_fields``."""
        return len(self.new) + len(self.missing) + len(self.changed)

    @property
    def judged(self) -> bool:
        """Some page's fields were noted: the drift is known (else nothing is said)."""
        return self.pages_observed > 0

    def lines(self) -> list[str]:
        """The drift in words, a line per field (nothing when there is none or it is not known)."""
        found = [f"new field {field!r} ({', '.join(kinds)}): not in columns" for field, kinds in self.new.items()]
        found += [
            f"field {change.field!r} changed type: declared {change.declared}, seen {', '.join(change.seen)}"
            for change in self.changed
        ]
        found += [
            f"field {field!r} missing: declared {declared}, never seen with a value"
            for field, declared in self.missing.items()
        ]
        return found


def merge_fields(pages: Iterable[Mapping[str, Iterable[str]]]) -> dict[str, list[str]]:
    """The union of pages' ``fields``: each field -> every kind seen on any page, in KINDS' order."""
    merged: dict[str, set[str]] = {}
    for fields in pages:
        for field, kinds in fields.items():
            merged.setdefault(field, set()).update(kinds)
    return {field: sorted(kinds, key=_kind_order) for field, kinds in merged.items()}


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


def compare(
    columns: Mapping[str, ColumnType],
    observed: Mapping[str, list[str]],
    *,
    records: int,
    pages_observed: int,
    pages_unobserved: int = 0,
) -> SourceDrift:
    """The drift of ``observed`` fields (seen in ``records`` records) from the declared ``columns``."""
    judged = pages_observed > 0
    new = {
        field: list(kinds)
        for field, kinds in observed.items()
        if judged and field not in columns and set(kinds) - {"null"}
    }
    missing = {
        field: declared
        for field, declared in columns.items()
        if judged and records > 0 and not set(observed.get(field, ())) - {"null"}
    }
    changed = [
        ChangedField(field=field, declared=declared, seen=list(observed[field]))
        for field, declared in columns.items()
        if field in observed and set(observed[field]) - {"null"} - FITS[declared]
    ]
    return SourceDrift(
        pages_observed=pages_observed,
        pages_unobserved=pages_unobserved,
        records_observed=records,
        observed=dict(observed),
        new=new,
        missing=missing,
        changed=changed,
    )


def source_drift(source: Source | None, pages: Iterable[LandedPage]) -> SourceDrift | None:
    """The drift of a source's landed pages in a run; None for a source without ``columns`` (raw only), or one
    the sources file no longer declares."""
    if source is None or source.columns is None:
        return None
    landed = list(pages)
    noted = [page.fields for page in landed if page.fields is not None]
    return compare(
        source.columns,
        merge_fields(noted),
        records=sum(page.records for page in landed if page.fields is not None),
        pages_observed=len(noted),
        pages_unobserved=len(landed) - len(noted),
    )


def rejudge(source: Source | None, drift: SourceDrift | None) -> SourceDrift | None:
    """``drift`` (a stored report's) judged again against the source's columns as they are now: accepted drift
    (columns changed) is no longer drift."""
    if drift is None or source is None or source.columns is None:
        return None
    return compare(
        source.columns,
        drift.observed,
        records=drift.records_observed,
        pages_observed=drift.pages_observed,
        pages_unobserved=drift.pages_unobserved,
    )


def run_drift(status: RunStatus, sources: SourcesFile) -> dict[str, SourceDrift]:
    """Each source of a run with ``columns``: its drift, from a status read with the pages' details
    (``Ledger.status(manifest, details=True)``)."""
    found: dict[str, SourceDrift] = {}
    for source in status.sources:
        pages = [page for shard in source.shards for page in (shard.pages or {}).values()]
        drift = source_drift(sources.by_name.get(source.source), pages)
        if drift is not None:
            found[source.source] = drift
    return found
