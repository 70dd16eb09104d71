"""The run ledger, kept in the lake: answers "is run R complete for source S, and what is missing?".

Layout (under ``ledger/``):
- ``runs/run=<R>/manifest.json``: what the planner planned (per source and shard: fan-out with
  the expected page count, or a chain);
- ``source=<S>/run=<R>/shard=<D>/landed=<NNNNN>_<NNNNN>_....json``: the pages of one worker batch
  that landed (their numbers in the key, so that a listing answers the question; their keys,
  hashes and counts in the body, and what landing each took: requests, 429s, latency, parks): one
  PUT per batch, not per page;
- ``source=<S>/run=<R>/shard=<D>/next=<NNNNN>.json``: the claim to enqueue page NNNNN of a chain
  (created with a conditional write, so a chain is continued once however often a message is
  delivered);
- ``source=<S>/run=<R>/shard=<D>/cursor=<sha256>.json``: which page a chain's cursor (or next URL)
  leads to, created once: a vendor that hands out a cursor again is caught, not followed in a loop;
- ``source=<S>/run=<R>/shard=<D>/end.json``: the last page of a chain;
- ``source=<S>/run=<R>/shard=<D>/failed=<NNNNN>.json``: the last failure of a page (reason, attempt),
  so that "what is missing" comes with "why";
- ``source=<S>/run=<R>/shard=<D>/children=<C>_<NNNNN>.json``: the claim to enqueue the work of child source C
  that page NNNNN of a parent announced, and the child shards it announced (created with a conditional write,
  like ``next=``: a redelivered parent page never sends its children twice); a child source's shards in a run
  are those its parent's markers list (apilake.children).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from apilake.lake import create_if_absent, is_not_found
from apilake.messages import WorkItem

if TYPE_CHECKING:
    from apilake.ledger_models import NOT_NOTED as NOT_NOTED
    from apilake.ledger_models import ChildOf as ChildOf
    from apilake.ledger_models import IncrementalWindow as IncrementalWindow
    from apilake.ledger_models import LandedPage as LandedPage
    from apilake.ledger_models import RunManifest as RunManifest
    from apilake.ledger_models import RunStatus as RunStatus
    from apilake.ledger_models import ShardPlan as ShardPlan
    from apilake.ledger_models import ShardStatus as ShardStatus
    from apilake.ledger_models import SourcePlan as SourcePlan
    from apilake.ledger_models import SourceStatus as SourceStatus

# The run's documents and statuses (apilake.ledger_models), importable from here as before, are imported at their
# first use (:func:`__getattr__`, and in the methods that read a status): the worker writes the ledger and reads no
# status, and its cold start does not build those classes.
_MODELS = frozenset(
    {
        "NOT_NOTED",
        "ChildOf",
        "IncrementalWindow",
        "LandedPage",
        "RunManifest",
        "RunStatus",
        "ShardPlan",
        "ShardStatus",
        "SourcePlan",
        "SourceStatus",
    }
)


if not TYPE_CHECKING:  # mypy sees the names above, and no other name passes for one of the module's

    def __getattr__(name: str) -> Any:
        if name in _MODELS:
            from apilake import ledger_models

            return getattr(ledger_models, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LEDGER_PREFIX = "ledger"
# The markers' names, matched when a status is read (re compiles and caches each then): the worker never does.
_LANDED_MARKER = r"/landed=(\d{5}(?:_\d{5})*)\.json$"
PAGES_PER_MARKER = 100  # keeps a marker's key well under S3's 1,024 bytes with batches over 10
_FAILURE_MARKER = r"/failed=(\d{5})\.json$"
_CHILDREN_MARKER = r"/children=([a-z0-9-]+)_\d{5}\.json$"
_SHARD_IN_KEY = r"/shard=([^/]+)/"
READ_THREADS = 16  # reads of one source's shards (a child's may be thousands) at once; the S3 client is thread-safe


class Claim(StrEnum):
    CREATED = "created"  # this delivery won the claim: send, then confirm
    SENT = "sent"  # the next page was enqueued already
    PENDING = "pending"  # another delivery claimed it and has not confirmed (yet)


# A NamedTuple, not a frozen dataclass: as immutable, a tenth of the cost to create at import (the cold start).
class ClaimState(NamedTuple):
    claim: Claim
    age_seconds: float = 0.0


def manifest_key(run_id: str) -> str:
    return f"{LEDGER_PREFIX}/runs/run={run_id}/manifest.json"


def source_ledger_prefix(source: str) -> str:
    return f"{LEDGER_PREFIX}/source={source}/"


def shard_prefix(source: str, run_id: str, shard: str) -> str:
    return f"{source_ledger_prefix(source)}run={run_id}/shard={shard}/"


def _item_prefix(item: WorkItem) -> str:
    return shard_prefix(item.source, item.run_id, item.shard)


class Ledger:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    @property
    def client(self) -> Any:
        """The S3 client (apilake.marks keeps the incremental marks in the same ledger)."""
        return self._s3

    # -- planner -------------------------------------------------------------------------------
    def write_manifest(self, manifest: RunManifest) -> None:
        self._put_json(manifest_key(manifest.run_id), manifest.model_dump(mode="json"))

    def read_manifest(self, run_id: str) -> RunManifest | None:
        from apilake.ledger_models import RunManifest

        document = self._get_json(manifest_key(run_id))
        return None if document is None else RunManifest.model_validate(document)

    def run_ids(self) -> list[str]:
        prefix = f"{LEDGER_PREFIX}/runs/"
        found = []
        for key in self._keys(prefix):
            if key.endswith("/manifest.json"):
                found.append(key[len(prefix) + len("run=") : -len("/manifest.json")])
        return sorted(found)

    # -- worker --------------------------------------------------------------------------------
    def mark_landed(self, landed: list[tuple[WorkItem, dict[str, Any]]]) -> int:
        """Record pages that landed: one marker per shard (and per 100 pages); returns the markers written."""
        by_shard: dict[str, dict[int, dict[str, Any]]] = {}
        for item, details in landed:
            by_shard.setdefault(_item_prefix(item), {})[item.page] = details
        written = 0
        for prefix, pages in by_shard.items():
            numbers = sorted(pages)
            for start in range(0, len(numbers), PAGES_PER_MARKER):
                chunk = numbers[start : start + PAGES_PER_MARKER]
                name = "_".join(f"{page:05d}" for page in chunk)
                self._put_json(f"{prefix}landed={name}.json", {str(page): pages[page] for page in chunk})
                written += 1
        return written

    def mark_failure(self, item: WorkItem, details: dict[str, Any]) -> None:
        self._put_json(f"{_item_prefix(item)}failed={item.page:05d}.json", details)

    def read_failure(self, item: WorkItem) -> dict[str, Any] | None:
        """The page's last failure as the worker noted it (``failed=<page>.json``), or None."""
        document: dict[str, Any] | None = self._get_json(f"{_item_prefix(item)}failed={item.page:05d}.json")
        return document

    def read_json(self, key: str) -> Any:
        """A JSON document of the lake (None when there is no such key): what the ledger's neighbours (the run
        report) keep beside it."""
        return self._get_json(key)

    def mark_end(self, item: WorkItem) -> None:
        self._put_json(f"{_item_prefix(item)}end.json", {"last_page": item.page})

    def claim_continuation(self, next_item: WorkItem, now: datetime | None = None) -> ClaimState:
        return self._claim(self._claim_key(next_item), {"item": next_item.model_dump(mode="json")}, now)

    def claim_children(
        self, parent: WorkItem, child: str, shards: list[str], now: datetime | None = None
    ) -> ClaimState:
        """Claim the sending of the child work ``parent``'s page announced for ``child`` (its ``shards``)."""
        return self._claim(self._children_key(parent, child), {"shards": shards}, now)

    def confirm_children(self, parent: WorkItem, child: str, shards: list[str]) -> None:
        self._put_json(self._children_key(parent, child), {"state": "sent", "shards": shards})

    def release_children(self, parent: WorkItem, child: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._children_key(parent, child))

    @staticmethod
    def _children_key(parent: WorkItem, child: str) -> str:
        return f"{_item_prefix(parent)}children={child}_{parent.page:05d}.json"

    def _claim(self, key: str, document: dict[str, Any], now: datetime | None) -> ClaimState:
        """Create the claim ``key`` (state pending) unless it exists; else whether it was sent, or how old it is."""
        if self._create_json(key, {"state": "pending", **document}):
            return ClaimState(Claim.CREATED)
        stored = self._s3.get_object(Bucket=self.bucket, Key=key)
        state = json.loads(stored["Body"].read()).get("state")
        if state == "sent":
            return ClaimState(Claim.SENT)
        age = ((now or datetime.now(UTC)) - stored["LastModified"]).total_seconds()
        return ClaimState(Claim.PENDING, age_seconds=age)

    def first_page_of_cursor(self, next_item: WorkItem) -> int:
        """Record that ``next_item``'s cursor leads to its page; returns the page it led to first
        (the same page on a redelivery, an earlier one when the vendor repeats a cursor)."""
        assert next_item.cursor is not None
        digest = hashlib.sha256(next_item.cursor.encode()).hexdigest()
        key = f"{_item_prefix(next_item)}cursor={digest}.json"
        if self._create_json(key, {"page": next_item.page}):
            return next_item.page
        return int(self._get_json(key)["page"])

    def confirm_continuation(self, next_item: WorkItem) -> None:
        self._put_json(self._claim_key(next_item), {"state": "sent", "item": next_item.model_dump(mode="json")})

    def release_continuation(self, next_item: WorkItem) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._claim_key(next_item))

    @staticmethod
    def _claim_key(next_item: WorkItem) -> str:
        return f"{_item_prefix(next_item)}next={next_item.page:05d}.json"

    # -- status --------------------------------------------------------------------------------
    def status(self, manifest: RunManifest, details: bool = False) -> RunStatus:
        """The run as the ledger has it: one listing per shard, the failures' markers read, and the landed
        markers too when the shard's records are reconciled or ``details`` are asked for (each marker read once,
        its pages then in :attr:`ShardStatus.pages`)."""
        from apilake.ledger_models import RunStatus

        found: dict[str, SourceStatus] = {}
        sources = [self._source_status(manifest, name, details, found) for name in manifest.sources]
        return RunStatus(run_id=manifest.run_id, ingestion_date=manifest.ingestion_date, sources=sources)

    def source_status(self, manifest: RunManifest, source: str, details: bool = False) -> SourceStatus:
        return self._source_status(manifest, source, details, {})

    def lineage_status(self, manifest: RunManifest, source: str) -> list[SourceStatus]:
        """``source``'s status, then each of its descendants' in the run (children, grandchildren), each read once:
        an incremental parent's mark moves only when all of them are complete (apilake.marks)."""
        found: dict[str, SourceStatus] = {}
        return [self._source_status(manifest, name, False, found) for name in (source, *manifest.descendants(source))]

    def _source_status(
        self, manifest: RunManifest, source: str, details: bool, found: dict[str, SourceStatus]
    ) -> SourceStatus:
        """``source``'s status (a child's after its parent's, each read once into ``found``)."""
        from apilake.ledger_models import SourceStatus

        if source not in found:
            plan = manifest.sources[source]
            if plan.parent is None:
                shards = _each(lambda shard: self._shard_status(source, manifest.run_id, shard, details), plan.shards)
                found[source] = SourceStatus(source, shards)
            elif plan.parent.source not in manifest.sources:
                note = f"parent '{plan.parent.source}' is not in the run's manifest"
                found[source] = SourceStatus(source, [], parent=plan.parent.source, parent_note=note)
            else:
                # Until its parent's is read, a child stands for "not known": a manifest with a cycle ends there.
                note = f"parent '{plan.parent.source}' is a descendant of '{source}' in the run's manifest"
                found[source] = SourceStatus(source, [], parent=plan.parent.source, parent_note=note)
                parent = self._source_status(manifest, plan.parent.source, details, found)
                found[source] = self._child_status(manifest.run_id, source, plan.parent, parent, details)
        return found[source]

    def _child_status(
        self, run_id: str, source: str, plan: ChildOf, parent: SourceStatus, details: bool
    ) -> SourceStatus:
        """A child source's shards: those its parent's pages announced (one read per marker), each a chain or a
        single page, from one listing of the child's run; complete once the parent is too. The markers and the
        shards are read :data:`READ_THREADS` at a time."""
        from apilake.ledger_models import ShardPlan, SourceStatus

        announced: set[str] = set()
        markers = [key for shard in parent.shards for key in shard.child_markers.get(source, [])]
        for document in _each(self._get_json, markers):
            announced.update((document or {}).get("shards", []))
        listed: dict[str, list[str]] = {}
        for key in self._keys(f"{source_ledger_prefix(source)}run={run_id}/shard="):
            if match := re.search(_SHARD_IN_KEY, key):
                listed.setdefault(match.group(1), []).append(key)
        expected = 1 if plan.mode == "fanout" else None
        shards = _each(
            lambda name: self._shard_status(
                source,
                run_id,
                ShardPlan(shard=name, mode=plan.mode, expected_pages=expected),
                details,
                listed.get(name, []),
            ),
            sorted(announced),
        )
        note = None
        if not parent.complete:
            note = f"parent '{parent.source}' is not complete: the child shards its pages announce may not all be known"
        return SourceStatus(source, shards, parent=parent.source, parent_note=note)

    def landed_details(self, source: str, run_id: str, shard: str) -> dict[int, dict[str, Any]]:
        """page -> what the worker recorded when it landed (key, hash, counts, the cursor's highest value)."""
        details: dict[int, dict[str, Any]] = {}
        for key in self._keys(f"{shard_prefix(source, run_id, shard)}landed="):
            if re.search(_LANDED_MARKER, key):
                details.update({int(page): body for page, body in (self._get_json(key) or {}).items()})
        return details

    def _shard_status(
        self, source: str, run_id: str, plan: ShardPlan, details: bool, listed: list[str] | None = None
    ) -> ShardStatus:
        prefix = shard_prefix(source, run_id, plan.shard)
        # The one listing (or the child's run's, ``listed``): landed markers, failures, the end, children's claims
        keys = self._keys(prefix) if listed is None else listed
        markers = {key: match.group(1) for key in keys if (match := re.search(_LANDED_MARKER, key))}
        landed = {int(page) for pages in markers.values() for page in pages.split("_")}
        reconciled = plan.error is None and plan.mode == "fanout"
        reconciled = reconciled and (plan.expected_records is not None or plan.page_size is not None)
        pages = self._read_landed(markers) if details or reconciled else None
        status = self._landed_and_ended(plan, landed, f"{prefix}end.json" in keys, prefix, pages)
        if reconciled and pages is not None:
            self._reconcile(plan, status, pages)
        for key in keys:
            match = re.search(_FAILURE_MARKER, key)
            if match and int(match.group(1)) not in landed:
                failure = self._get_json(key) or {}
                status.failures[int(match.group(1))] = (
                    f"{failure.get('error')}: {failure.get('reason')} (attempt {failure.get('attempt')})"
                )
        status.pages = pages if details else None
        for key in keys:
            if match := re.search(_CHILDREN_MARKER, key):
                status.child_markers.setdefault(match.group(1), []).append(key)
        return status

    def _read_landed(self, markers: dict[str, str]) -> dict[int, LandedPage]:
        """The pages the landed markers hold (a page in two markers, from a redelivered batch: the later key's)."""
        from apilake.ledger_models import LandedPage

        return {
            int(page): LandedPage.model_validate(body)
            for key in sorted(markers)
            for page, body in (self._get_json(key) or {}).items()
        }

    def _landed_and_ended(
        self, plan: ShardPlan, landed: set[int], end_listed: bool, prefix: str, pages: dict[int, LandedPage] | None
    ) -> ShardStatus:
        from apilake.ledger_models import ShardStatus

        if plan.error is not None:
            return ShardStatus(plan.shard, plan.mode, plan.expected_pages, len(landed), False, note=plan.error)
        if plan.mode == "fanout":
            expected = plan.expected_pages or 0
            missing = sorted(set(range(1, expected + 1)) - landed)
            return ShardStatus(plan.shard, plan.mode, expected, len(landed), True, missing)
        end = None
        if end_listed:  # the chain ended: where, its landed pages read tell, else end.json
            end = _chain_end(landed, pages) or self._get_json(f"{prefix}end.json")
        if end is None:
            last = max(landed, default=0)
            missing = sorted(set(range(1, last + 1)) - landed)
            note = f"chain not ended: no page after {last} has landed yet" if last else "chain not started"
            return ShardStatus(plan.shard, plan.mode, None, len(landed), False, missing, note)
        last_page = int(end["last_page"])
        missing = sorted(set(range(1, last_page + 1)) - landed)
        return ShardStatus(plan.shard, plan.mode, last_page, len(landed), True, missing)

    def _reconcile(self, plan: ShardPlan, status: ShardStatus, pages: dict[int, LandedPage]) -> None:
        """The records that landed against what the vendor stated: its total, once every page landed, and
        its page size, on every page but the last (decision 28)."""
        held = {page: landed.records for page, landed in pages.items()}
        status.expected_records, status.landed_records = plan.expected_records, sum(held.values())
        status.page_size, status.capped = plan.page_size, plan.capped
        last = plan.expected_pages or 0
        if plan.page_size is not None:
            status.short_pages = {p: n for p, n in sorted(held.items()) if p < last and n < plan.page_size}
        reasons = [
            f"page {page} holds {records} records, fewer than the page size {plan.page_size}, and is not the last"
            for page, records in status.short_pages.items()
        ]
        if plan.expected_records is not None and not status.missing and status.landed_records != plan.expected_records:
            reasons.append(f"the vendor stated {plan.expected_records} records, {status.landed_records} landed")
        status.unreconciled = "; ".join(reasons) or None

    # -- S3 helpers ----------------------------------------------------------------------------
    def _create_json(self, key: str, document: Any) -> bool:
        """Create ``key`` only if it does not exist (S3 conditional write); False when it did."""
        body = json.dumps(document, separators=(",", ":")).encode()
        return create_if_absent(self._s3, self.bucket, key, body, ContentType="application/json")

    def _put_json(self, key: str, document: Any) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, separators=(",", ":"), default=str).encode(),
            ContentType="application/json",
        )

    def _get_json(self, key: str) -> Any:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return json.loads(response["Body"].read())

    def _keys(self, prefix: str) -> list[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]


def _chain_end(landed: set[int], pages: dict[int, LandedPage] | None) -> dict[str, Any] | None:
    """The end of a chain whose ``end.json`` is listed, as its landed markers (when read) tell it without reading
    ``end.json``: its highest landed page, when that page had no next (``has_next`` false, what made the worker
    write ``end.json``). None when they cannot tell (no pages read, a page recorded before ``has_next`` was, or
    the highest page had a next: the last page has not been recorded yet): ``end.json`` then."""
    top = pages.get(max(landed)) if pages is not None and landed else None
    return {"last_page": max(landed)} if top is not None and top.has_next is False else None


def _each[T, R](read: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``read`` of each item, in order, :data:`READ_THREADS` at a time (one at a time for a single item)."""
    if len(items) <= 1:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(items))) as pool:
        return list(pool.map(read, items))
