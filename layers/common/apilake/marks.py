"""The high-water mark of each incremental source, kept in the ledger and moved only by complete runs.

Under ``ledger/source=<S>/state/``:
- ``mark.json``: the mark (the highest cursor value landed by a complete run), when it moved, by which run,
  and the value before;
- ``open=<R>.json``: run R asked for records after the mark, and whether it completed is not settled yet.

The planner settles a source before it plans it (no other function, no other service): each open run that
is complete (:attr:`apilake.ledger.SourceStatus.complete`, the source's and that of each of its child sources
in the run, grandchildren included: :meth:`MarkStore.complete`) offers the highest value its pages landed (the
workers note it in their landed markers); the mark becomes the largest of those and of itself, never less.
It is written with an S3 conditional write on the ETag that was read (``If-None-Match: *`` for the first),
so two planners at once can neither move it backwards nor lose an advance: the one that loses reads it
again and settles again. Open runs planned up to the newest complete one are then closed (a later complete
run fetched what they would bring); a run planned after it stays open while incomplete, and a redrive that
completes it moves the mark at the next settle. A failed or partial run leaves the mark where it was, so
the next run asks for the same window again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from apilake.config import Incremental
from apilake.incremental import Value, parse_value, to_json
from apilake.lake import ALREADY_EXISTS_CODES, is_not_found
from apilake.ledger import Ledger, RunManifest, source_ledger_prefix

MAX_SETTLE_ATTEMPTS = 5  # conditional writes lost in a row to other planners before giving up (retryable)
_OPEN_RUN = re.compile(r"/open=([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\.json$")


def mark_key(source: str) -> str:
    return f"{source_ledger_prefix(source)}state/mark.json"


def open_run_key(source: str, run_id: str) -> str:
    return f"{source_ledger_prefix(source)}state/open={run_id}.json"


class Mark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str | int | float
    moved_at: datetime
    run_id: str  # the complete run whose pages gave this value
    previous: str | int | float | None = None


@dataclass
class Settled:
    """What settling found: the mark (None: none yet), whether it moved now, the runs still open."""

    mark: Mark | None
    moved: bool = False
    closed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


class MarkLostRaceError(Exception):
    """Other planners moved the mark each time this one tried (retry the invocation)."""


class MarkStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self.ledger = Ledger(s3_client, bucket)

    def read(self, source: str) -> tuple[Mark | None, str | None]:
        """The source's mark and its ETag (None, None when it has none yet)."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=mark_key(source))
        except ClientError as exc:
            if is_not_found(exc):
                return None, None
            raise
        return Mark.model_validate(json.loads(response["Body"].read())), response.get("ETag")

    def open_run(self, source: str, run_id: str, planned_at: datetime) -> None:
        """Note that ``run_id`` asked for records after the mark: its completion will be settled."""
        body = json.dumps({"run_id": run_id, "planned_at": planned_at.isoformat()}).encode()
        self._s3.put_object(
            Bucket=self.bucket, Key=open_run_key(source, run_id), Body=body, ContentType="application/json"
        )

    def open_runs(self, source: str) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{source_ledger_prefix(source)}state/open="
        )
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        return [match.group(1) for key in keys if (match := _OPEN_RUN.search(key))]

    def settle(self, source: str, config: Incremental, now: datetime, current_run: str | None = None) -> Settled:
        """Move the mark to the highest value landed by the source's complete open runs (never backwards)."""
        for _ in range(MAX_SETTLE_ATTEMPTS):
            mark, etag = self.read(source)
            manifests = {
                run: manifest
                for run in self.open_runs(source)
                if run != current_run and (manifest := self.ledger.read_manifest(run)) is not None
            }
            complete = {run: manifest for run, manifest in manifests.items() if self.complete(manifest, source)}
            if not complete:
                return Settled(mark, waiting=sorted(manifests))
            newest = max(manifest.created_at for manifest in complete.values())
            closed = sorted(run for run, manifest in manifests.items() if manifest.created_at <= newest)
            waiting = sorted(set(manifests) - set(closed))
            best: tuple[Value, str] | None = None
            for run, manifest in complete.items():
                highest = self._highest(config, manifest, source)
                if highest is not None and (best is None or highest > best[0]):  # type: ignore[operator]
                    best = (highest, run)
            current = parse_value(config, mark.value) if mark else None
            moved = best is not None and (current is None or best[0] > current)  # type: ignore[operator]
            if moved:
                assert best is not None
                new = Mark(value=to_json(best[0]), moved_at=now, run_id=best[1], previous=mark.value if mark else None)
                if not self._write(source, new, etag):
                    continue
                mark = new
            for run in closed:
                self._s3.delete_object(Bucket=self.bucket, Key=open_run_key(source, run))
            return Settled(mark, moved=moved, closed=closed, waiting=waiting)
        raise MarkLostRaceError(f"{source}: the mark changed under each of {MAX_SETTLE_ATTEMPTS} attempts")

    def complete(self, manifest: RunManifest, source: str) -> bool:
        """Whether ``source``'s run counts as complete for its mark: the source and every descendant of it in the
        run (children, grandchildren). A parent's mark moved while a child's shard is missing would not list that
        parent record again, and its children would never be fetched."""
        return source in manifest.sources and all(
            status.complete for status in self.ledger.lineage_status(manifest, source)
        )

    def _highest(self, config: Incremental, manifest: RunManifest, source: str) -> Value | None:
        """The highest cursor value the run's pages landed (None when they held no records)."""
        highest: Value | None = None
        for shard in manifest.sources[source].shards:
            for details in self.ledger.landed_details(source, manifest.run_id, shard.shard).values():
                raw = details.get("cursor_max")
                if raw is None:
                    continue
                value = parse_value(config, raw)
                if highest is None or value > highest:  # type: ignore[operator]
                    highest = value
        return highest

    def _write(self, source: str, mark: Mark, etag: str | None) -> bool:
        """Write the mark if it is still the one read (its ETag; or still absent); False when it is not."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=mark_key(source),
                Body=mark.model_dump_json().encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (*ALREADY_EXISTS_CODES, "NoSuchKey"):
                return False
            raise
        return True


@dataclass
class MarkReport:
    """What `apilake status` says of an incremental source in a run: the window it asked for, the highest
    value it landed, and the source's mark now (it moves at the next run's planning, if this one is complete)."""

    param: str
    since: str | int | float
    until: str | int | float | None
    explicit: bool
    landed_highest: str | int | float | None
    mark: Mark | None


def _comparable(raw: str | int | float) -> datetime | int | float:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else raw


def mark_reports(store: MarkStore, manifest: RunManifest) -> dict[str, MarkReport]:
    """source -> its report, for the incremental sources of ``manifest``."""
    reports = {}
    for source, plan in manifest.sources.items():
        if plan.window is None:
            continue
        landed = [
            details["cursor_max"]
            for shard in plan.shards
            for details in store.ledger.landed_details(source, manifest.run_id, shard.shard).values()
            if details.get("cursor_max") is not None
        ]
        reports[source] = MarkReport(
            param=plan.window.param,
            since=plan.window.since,
            until=plan.window.until,
            explicit=plan.window.explicit,
            landed_highest=max(landed, key=_comparable) if landed else None,
            mark=store.read(source)[0],
        )
    return reports
