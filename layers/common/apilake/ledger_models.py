"""The run ledger's documents and verdicts: the manifest the planner writes (:class:`RunManifest`), what a worker
records of a landed page (:class:`LandedPage`), and the statuses :class:`apilake.ledger.Ledger` reads off the
ledger (:class:`RunStatus`, :class:`SourceStatus`, :class:`ShardStatus`). apilake.ledger re-exports them, imported
at their first use (the worker's claims, :class:`apilake.ledger.ClaimState`, are apilake.ledger's own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apilake.messages import RunId, ShardName

# Why a page is missing when no failure of it was recorded and its shard has no note.
NOT_NOTED = "no failure noted: not landed yet (queued, in flight, or its message was lost)"


class ShardPlan(BaseModel):
    # defer_build: built at first use; the worker imports these models and never uses them (decision 100).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    shard: ShardName
    mode: Literal["fanout", "chain"]
    expected_pages: int | None = None  # fan-out only
    messages: int = 0
    error: str | None = None
    # Fan-out only, from the probe (decision 28): the records the vendor stated, the page size every page
    # but the last holds, and whether that is the vendor's cap below the configured size.
    expected_records: int | None = None
    page_size: int | None = None
    capped: bool = False


class IncrementalWindow(BaseModel):
    """What an incremental source's run asked for: records after ``since`` (the mark less the overlap, the
    initial value, or a manual run's explicit window, which never moves the mark)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    param: str
    since: str | int | float
    until: str | int | float | None = None
    mark: str | int | float | None = None  # the mark when the run was planned (None: no mark yet)
    explicit: bool = False


class ChildOf(BaseModel):
    """A child source in a run's manifest: not planned itself, its shards are those its parent's landed pages
    announce (``children=<child>_<page>.json`` markers in the parent's shards), each a chain or a single page."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    source: str  # the parent source
    mode: Literal["fanout", "chain"]  # fanout: a single page (expected_pages 1)


class SourcePlan(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    shards: list[ShardPlan]
    window: IncrementalWindow | None = None  # incremental sources only
    parent: ChildOf | None = Field(default=None, exclude_if=lambda parent: parent is None)  # child sources only


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    run_id: RunId
    ingestion_date: date
    created_at: datetime
    trigger: Literal["schedule", "manual"]
    sources: dict[str, SourcePlan]

    def descendants(self, source: str) -> list[str]:
        """The sources of the run whose parent is ``source``, theirs, and so on (parents before their children)."""
        found: list[str] = []
        parents = [source]
        while parents:
            parent = parents.pop(0)
            for name, plan in self.sources.items():
                if plan.parent is not None and plan.parent.source == parent and name not in found and name != source:
                    found.append(name)
                    parents.append(name)
        return found


class LandedPage(BaseModel):
    """What the worker recorded of a page that landed (an entry of a landed marker). The request stats came
    later (issue 13): a marker written before them reads with them unknown (None)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    key: str | None = None
    sha256: str | None = None
    records: int = 0
    bytes: int = 0
    written: bool = True
    has_next: bool | None = None
    fetched_at: datetime | None = None
    attempts: int | None = None  # HTTP requests the page took, retries included
    throttled: int | None = None  # 429 answers among them
    latency_ms: float | None = None  # of the successful response
    parks: int | None = None  # times the page waited in its queue because the vendor asked
    # A source with columns: each top-level field of the page's records -> its JSON kinds (apilake.drift)
    fields: dict[str, list[str]] | None = None
    # A child source's page: the parent record's values it was fetched for (its records' join to the parent)
    parent_values: dict[str, str] | None = None


@dataclass
class ShardStatus:
    shard: str
    mode: str
    expected_pages: int | None
    landed_pages: int
    ended: bool
    missing: list[int] = field(default_factory=list)
    note: str | None = None
    # missing page -> the reason of its last failure
    failures: dict[int, str] = field(default_factory=dict)
    # Reconciliation (fan-out shards with a probe): records stated and landed, pages short before the last
    # (page -> its records), and why the records do not reconcile (None when they do, or nothing to check).
    expected_records: int | None = None
    landed_records: int | None = None
    page_size: int | None = None
    capped: bool = False
    short_pages: dict[int, int] = field(default_factory=dict)
    unreconciled: str | None = None
    # What the worker recorded of each landed page: read when asked for (``Ledger.status(details=True)``).
    pages: dict[int, LandedPage] | None = None
    # A parent source's shard: child source -> the keys of the markers of the children its pages announced.
    child_markers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.ended and not self.missing and self.note is None and self.unreconciled is None

    @property
    def awaited_page(self) -> int | None:
        """In a shard that has not ended (a chain still going or stalled, a plan that failed), the page after the
        last one known (landed, missing or failed): it has not landed either. None once the shard ended."""
        # A chain's pages up to its last landed one are landed or missing, so the next is after both.
        return None if self.ended else self.landed_pages + len(self.missing) + 1

    @property
    def missing_pages(self) -> list[int]:
        """The pages not landed: the gaps status finds, those that failed, and the awaited page of a shard that
        has not ended (such a shard misses at least one page). The one definition of the run report, of the
        completeness check's ``pages_missing`` metric and of ``apilake status``."""
        pages = set(self.missing) | set(self.failures)
        if self.awaited_page is not None:
            pages.add(self.awaited_page)
        return sorted(pages)

    @property
    def pages_missing(self) -> int:
        return len(self.missing_pages)

    def why_missing(self, page: int) -> str:
        """Why ``page`` is missing: its last failure; for the awaited page of a shard that has not ended, the
        shard's note (the chain not ended, the plan that failed); else that nothing was noted."""
        if page in self.failures:
            return self.failures[page]
        if page == self.awaited_page and self.note:
            return self.note
        return NOT_NOTED


@dataclass
class SourceStatus:
    source: str
    shards: list[ShardStatus]
    # A child source: its parent, and why the shards its parent announced may not be all (the parent is not
    # complete yet), None when they are.
    parent: str | None = None
    parent_note: str | None = None

    @property
    def complete(self) -> bool:
        """Every planned page landed, every chain ended, and the records reconcile (decision 28); a child
        source's parent is complete too, so every child shard is known. An incremental source's mark moves
        only when this is true of its run (apilake.marks)."""
        return self.parent_note is None and all(shard.complete for shard in self.shards)


@dataclass
class RunStatus:
    run_id: str
    ingestion_date: date
    sources: list[SourceStatus]

    @property
    def complete(self) -> bool:
        return all(source.complete for source in self.sources)
