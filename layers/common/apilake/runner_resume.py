"""What a resumed run (apilake.runner) queues: the pages the ledger does not record as landed, as work items.

A fan-out shard's missing pages as they are; a chain's from the claims of its continuations (each claim holds its
work item, cursor included), a page with no claim through the page before it (fetched again, unchanged, to claim
it). A child source's shards are those its parent's pages announced (the claims' markers name them); the values
of each shard's parent record are read back from the parent page that announced it, as landed in the lake, so
that page 1 of a child shard whose work the crash lost is queued again with them.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from apilake.children import announced
from apilake.config import SourcesFile
from apilake.lake import page_key
from apilake.ledger import Ledger, RunManifest, SourceStatus, shard_prefix
from apilake.messages import WorkItem
from apilake.observability import logger

_CLAIM = re.compile(r"/next=(\d{5})\.json$")
_CHILDREN = re.compile(r"/children=[a-z0-9-]+_(\d{5})\.json$")


class Resumption:
    """The work items of a run's pages not landed, read from the ledger (and, for child sources, the lake)."""

    def __init__(self, ledger: Ledger, sources: SourcesFile, manifest: RunManifest) -> None:
        self.ledger = ledger
        self.sources = sources
        self.manifest = manifest
        # source -> shard -> its page 1 (a child shard's carries its parent values), as found so far
        self._firsts: dict[str, dict[str, WorkItem]] = {}

    def items(self, names: Sequence[str]) -> list[WorkItem]:
        """The pages of ``names`` and of their descendants in the run that the ledger does not record as landed."""
        wanted = {*names, *(child for name in names for child in self.manifest.descendants(name))}
        status = self.ledger.status(self.manifest)
        by_name = {source.source: source for source in status.sources}
        # Parents before their children: a child's shards are found from its parent's pages, by their first items.
        roots = [name for name, plan in self.manifest.sources.items() if plan.parent is None]
        ordered = dict.fromkeys([*roots, *(child for root in roots for child in self.manifest.descendants(root))])
        items: list[WorkItem] = []
        for name in ordered:
            if name in by_name:
                found = self._source_items(by_name, name)
                items += found if name in wanted else []
        return items

    def _source_items(self, by_name: dict[str, SourceStatus], name: str) -> list[WorkItem]:
        plan, source = self.manifest.sources[name], by_name[name]
        items: list[WorkItem] = []
        if plan.parent is not None:
            firsts = self._announced(name, by_name[plan.parent.source]) if plan.parent.source in by_name else {}
            self._firsts[name] = firsts
            for shard in source.shards:
                first = firsts.get(shard.shard)
                if first is None:
                    if shard.missing_pages:
                        logger.warning("child shard not resumed: no landed parent page announces it",
                                       extra={"source": name, "shard": shard.shard})  # fmt: skip
                elif plan.parent.mode == "fanout":
                    items += [first.model_copy(update={"page": p}) for p in shard.missing_pages]
                else:
                    items += self._chain_items(first, shard.missing_pages)
            return items
        self._firsts[name] = {}
        for shard, shard_plan in zip(source.shards, plan.shards, strict=True):
            if shard_plan.error is not None:
                continue
            first = WorkItem(
                run_id=self.manifest.run_id,
                source=name,
                ingestion_date=self.manifest.ingestion_date,
                shard=shard.shard,
                page=1,
            )
            self._firsts[name][shard.shard] = first
            if shard_plan.mode == "fanout":
                sized = {"page_size": shard_plan.page_size} if shard_plan.capped else {}
                items += [first.model_copy(update={"page": p, **sized}) for p in shard.missing_pages]
            else:
                items += self._chain_items(first, shard.missing_pages)
        return items

    def _announced(self, child: str, parent: SourceStatus) -> dict[str, WorkItem]:
        """Page 1 of each shard of ``child`` that ``parent``'s landed pages announced (those with a claim's marker),
        from the records of those pages."""
        found: dict[str, WorkItem] = {}
        for shard in parent.shards:
            first = self._firsts.get(parent.source, {}).get(shard.shard)
            for key in shard.child_markers.get(child, []):
                match = _CHILDREN.search(key)
                if first is None or match is None:
                    continue
                page = first.model_copy(update={"page": int(match.group(1)), "cursor": None})
                records = self._records(page)
                if records is not None:
                    for item in announced(page, self.sources.get(child), records):
                        found.setdefault(item.shard, item)
        return found

    def _records(self, item: WorkItem) -> list[Any] | None:
        """The records of a page as landed (None when it cannot be read)."""
        key = page_key(item.source, item.ingestion_date, item.shard, item.page)
        try:
            body = self.ledger.client.get_object(Bucket=self.ledger.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            logger.warning("parent page not read back", extra={"key": key, "reason": str(exc)})
            return None
        return [json.loads(line) for line in gzip.decompress(body).splitlines() if line.strip()]

    def _chain_items(self, first: WorkItem, missing: list[int]) -> list[WorkItem]:
        """A chain's missing pages, each from its claim (which holds the item, cursor included); a page with no
        claim (the one before it landed, its continuation not yet claimed) through the page before it, fetched
        again (unchanged, not rewritten) to claim it."""
        if not missing:
            return []
        prefix = shard_prefix(first.source, first.run_id, first.shard)
        claims: dict[int, str] = {}
        for page in self.ledger.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.ledger.bucket, Prefix=f"{prefix}next="
        ):
            for obj in page.get("Contents", []):
                if match := _CLAIM.search(obj["Key"]):
                    claims[int(match.group(1))] = obj["Key"]
        found: dict[int, WorkItem] = {}
        for wanted in missing:
            page = wanted
            while page > 1 and page not in claims:
                page -= 1
            if page in found:
                continue
            if page == 1:
                found[1] = first
            else:
                claim = self.ledger.read_json(claims[page]) or {}
                found[page] = WorkItem.model_validate(claim["item"])
        return [found[page] for page in sorted(found)]
