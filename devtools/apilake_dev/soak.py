"""The soak: the demo's local flow under every fault we know, then a verdict computed from the lake
and the queues against the vendors' deterministic data. Then the faults are cleared, the DLQs
redriven, and the verdict computed again: the run must complete.

`make soak` runs it at full scale (>= 2,000 pages); `make test` at a reduced one.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import yaml

from apilake.config import load_sources
from apilake.lake import source_prefix
from apilake_dev.demo import DEMO_KEY, EXAMPLE_SOURCES, authenticated, demo_sources
from apilake_dev.local.containers import ContainerFaults
from apilake_dev.local.run import LocalRun, LocalRunResult, Printer
from apilake_dev.vendors.fake import CHAIN_STYLES, Dataset, FakeVendor, FaultPlan

PAGE_SIZE = 20
# Records each chain lacks of full pages, in turn: last pages of different lengths, one of them full.
CHAIN_SHORTFALL = (7, 0, 13)
SHARD_DAYS = 10
INGESTION_DATE = "2026-11-26"
FIRST_SHARD, LAST_SHARD = "2026-11-16", "2026-11-25"
# The fake vendor serves each example source in its own pagination style (demo.endpoint).
EXAMPLES = load_sources(EXAMPLE_SOURCES)
STYLES = {s.name: s.pagination.type for s in EXAMPLES.sources}
DEFAULT_RATES = {
    "throttle_seconds": 0.02,
    "throttle_date": 0.02,
    "throttle_bare": 0.02,
    "server_error": 0.03,
    "reset": 0.02,
    "slow": 0.02,
    "truncated": 0.02,
    "malformed": 0.01,
    "cursor_repeat": 0.01,
}
DEFAULT_CONTAINER_FAULTS = ContainerFaults(crash=0.01, put_failure=0.02, duplicate=0.02)
_KEY = re.compile(r"/shard=([^/]+)/page=(\d{5})\.json\.gz$")


@dataclass
class ShardExpectation:
    source: str
    shard: str
    pages: int  # the pages the vendor serves for this shard
    chain: bool
    permanent: dict[int, str] = field(default_factory=dict)  # page -> injected permanent fault

    def reachable(self, faults_on: bool) -> set[int]:
        """Pages that must land: all of them, but with faults on, not the permanently failing ones
        (and, in a chain, nothing after the first of them)."""
        if not faults_on or not self.permanent:
            return set(range(1, self.pages + 1))
        if self.chain:
            return set(range(1, min(self.permanent)))
        return set(range(1, self.pages + 1)) - set(self.permanent)

    def dead(self, faults_on: bool) -> set[int]:
        """Pages whose message must end in the DLQ."""
        if not faults_on or not self.permanent:
            return set()
        return {min(self.permanent)} if self.chain else set(self.permanent)


@dataclass
class Verdict:
    phase: str
    pages_expected: int = 0
    pages_landed: int = 0
    lost: int = 0
    duplicated_pages: int = 0
    duplicated_records: int = 0
    lost_records: int = 0
    forked: int = 0
    dlq: int = 0
    dlq_explained: int = 0
    dlq_unexplained: int = 0
    permanent_not_in_dlq: int = 0
    unhandled: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        bad = (
            self.lost,
            self.duplicated_pages,
            self.duplicated_records,
            self.lost_records,
            self.forked,
            self.dlq_unexplained,
            self.permanent_not_in_dlq,
            self.unhandled,
        )
        return not any(bad)

    def line(self) -> str:
        return (
            f"verdict ({self.phase}): pages expected {self.pages_expected}, landed {self.pages_landed}, "
            f"lost {self.lost}, duplicated {self.duplicated_pages} (records: lost {self.lost_records}, "
            f"duplicated {self.duplicated_records}), chains forked {self.forked}; "
            f"DLQ {self.dlq} = injected permanent faults {self.dlq_explained} + unexplained {self.dlq_unexplained} "
            f"(permanent faults not in the DLQ: {self.permanent_not_in_dlq}); unhandled exceptions {self.unhandled}"
            f" -> {'PASS' if self.ok else 'FAIL'}"
        )


def soak_datasets(pages: int) -> dict[str, Dataset]:
    """About ``pages`` pages: 40 % for the daily-sharded fan-out source (over ten daily shards), 20 % for
    each chain (a few records short of a full last page, each chain a different number)."""
    per_day = max(1, round(pages * 0.4 / SHARD_DAYS)) * PAGE_SIZE
    chain = max(2, round(pages * 0.2)) * PAGE_SIZE
    found, chains = {}, 0
    for source in EXAMPLES.sources:
        if source.incremental is not None:
            continue  # fetched by the mark, not by the soak's window of days (the demo runs it)
        if source.sharding.type == "daily":
            found[source.name] = Dataset(source.name, total=per_day * SHARD_DAYS, days=SHARD_DAYS)
        else:
            found[source.name] = Dataset(source.name, total=chain - CHAIN_SHORTFALL[chains % len(CHAIN_SHORTFALL)])
            chains += 1
    return found


def expectations(datasets: dict[str, Dataset], plan: FaultPlan) -> list[ShardExpectation]:
    found = []
    for source, dataset in datasets.items():
        style = STYLES[source]
        chain = style in CHAIN_STYLES
        shards = (
            [(d, _next_day(d)) for d in _days(FIRST_SHARD, LAST_SHARD)]
            if EXAMPLES.get(source).sharding.type == "daily"
            else [(None, None)]
        )
        for since, until in shards:
            count = len(dataset.records(since, until))
            if chain and plan.empty_last_page:
                pages = count // PAGE_SIZE + 1
            else:
                pages = max(1, math.ceil(count / PAGE_SIZE)) if chain else math.ceil(count / PAGE_SIZE)
            permanent = {}
            for page in range(1, pages + 1):
                kind = plan.permanent(style, dataset.name, page)
                if kind == "malformed" or (kind == "cursor_repeat" and page < pages):
                    permanent[page] = kind
            found.append(ShardExpectation(source, since or "all", pages, chain, permanent))
    return found


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def soak_sources(vendor: FakeVendor, target: Path) -> Path:
    """The demo's sources with small pages, fast retries, short timeouts and no rate limit."""
    path = demo_sources(
        vendor,
        target,
        {
            "retries": {"max_attempts": 5, "base_delay_seconds": 0.02, "max_delay_seconds": 1.0},
            "timeouts": {"connect_seconds": 1, "read_seconds": 0.5},
            "budget": {"max_concurrency": 2},
        },
    )
    document = yaml.safe_load(path.read_text())
    for source in document["sources"]:  # each style's page-size parameter, as the fake vendor reads it
        style = source["pagination"]["type"]
        if style == "page_number":
            source["pagination"]["page_size"] = PAGE_SIZE
        elif style == "cursor":
            source["params"] = {"limit": str(PAGE_SIZE)}
        else:
            source["params"] = {**source.get("params", {}), "per_page": str(PAGE_SIZE)}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def compute_verdict(
    run: LocalRun,
    run_id: str,
    datasets: dict[str, Dataset],
    shards: list[ShardExpectation],
    faults_on: bool,
    phase: str,
) -> Verdict:
    verdict = Verdict(phase=phase)
    s3, bucket = run.s3, run.deployment.bucket
    verdict.unhandled = int(sum(row.get("handler_errors", 0) for row in run.per_source.values()))
    for source, dataset in datasets.items():
        prefix = f"{source_prefix(source)}ingestion_date={INGESTION_DATE}/"
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        landed = {(m.group(1), int(m.group(2))): key for key in keys if (m := _KEY.search(key))}
        ids: Counter[str] = Counter()
        for key in landed.values():
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            ids.update(json.loads(line)["id"] for line in body.splitlines())
        expected_ids: set[str] = set()
        dead_expected: set[tuple[str, int]] = set()
        for shard in (s for s in shards if s.source == source):
            reachable = shard.reachable(faults_on)
            got = {page for (name, page) in landed if name == shard.shard}
            verdict.pages_expected += len(reachable)
            verdict.pages_landed += len(got & reachable)
            verdict.lost += len(reachable - got)
            if shard.chain and got - reachable:
                verdict.forked += 1
                verdict.details.append(
                    f"{source} shard {shard.shard}: pages beyond the chain's end {sorted(got - reachable)}"
                )
            for page in sorted(reachable - got):
                verdict.details.append(f"{source} shard {shard.shard}: page {page} lost")
            records = dataset.records(*_window(shard.shard))
            for page in reachable:
                expected_ids.update(r["id"] for r in records[(page - 1) * PAGE_SIZE : page * PAGE_SIZE])
            dead_expected |= {(shard.shard, page) for page in shard.dead(faults_on)}
        verdict.duplicated_records += sum(n - 1 for n in ids.values() if n > 1)
        verdict.lost_records += len(expected_ids - set(ids))
        dead = {(json.loads(m["Body"])["shard"], json.loads(m["Body"])["page"]) for m in run.dlq_messages(source)}
        verdict.dlq += len(dead)
        verdict.dlq_explained += len(dead & dead_expected)
        verdict.dlq_unexplained += len(dead - dead_expected)
        verdict.permanent_not_in_dlq += len(dead_expected - dead)
        for shard_name, page in sorted(dead - dead_expected):
            verdict.details.append(
                f"{source} shard {shard_name}: page {page} in the DLQ without an injected permanent fault"
            )
    return verdict


def _window(shard: str) -> tuple[str | None, str | None]:
    return (None, None) if shard == "all" else (shard, _next_day(shard))


@dataclass
class SoakResult:
    verdicts: list[Verdict]
    injected: dict[str, int]
    result: LocalRunResult
    pages_total: int

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts) and self.result.status is not None and self.result.status.complete


def run_soak(
    home: Path,
    pages: int = 2000,
    rates: dict[str, float] | None = None,
    container_faults: ContainerFaults = DEFAULT_CONTAINER_FAULTS,
    visibility_timeout: int = 6,
    seed: int = 7,
    echo: Printer = print,
) -> SoakResult:
    datasets = soak_datasets(pages)
    plan = FaultPlan(rates=DEFAULT_RATES if rates is None else rates, seed=seed, slow_seconds=1.0, empty_last_page=True)
    shards = expectations(datasets, plan)
    protected = authenticated(EXAMPLE_SOURCES)
    total = sum(s.pages for s in shards)
    echo(f"soak: {total} pages over 4 sources, vendor fault rates {plan.rates}, platform faults {container_faults}")
    event = {
        "run_id": f"soak-{seed}",
        "sources": sorted(datasets),
        "ingestion_date": INGESTION_DATE,
        "shard_from": FIRST_SHARD,
        "shard_to": LAST_SHARD,
    }
    with FakeVendor(list(datasets.values()), api_key=DEMO_KEY, protected=set(protected), plan=plan) as vendor:
        sources = soak_sources(vendor, home / "soak-sources.yaml")
        secrets = dict.fromkeys(protected.values(), DEMO_KEY)
        # Workers get half the visibility timeout (the template's sixth would leave a second locally).
        with LocalRun(
            sources, home, secrets, visibility_timeout, container_faults, echo, worker_timeout=visibility_timeout / 2
        ) as run:
            run_id, planner_error = run.plan(event)
            if planner_error or run_id is None:
                raise RuntimeError(f"the soak's planner failed: {planner_error}")
            drained = run.drain(max_seconds=1800)
            first = compute_verdict(run, run_id, datasets, shards, faults_on=True, phase="faults on")
            echo(first.line())
            # Clear the vendor's faults, move every DLQ back, drain: the run must complete.
            vendor.state.plan = FaultPlan(rates={}, seed=seed, empty_last_page=True)
            run.faults = ContainerFaults()
            moved = {source: run.redrive(source) for source in datasets}
            echo(f"faults cleared; redriven from the DLQs: {moved}")
            drained = run.drain(max_seconds=1800) and drained
            second = compute_verdict(
                run, run_id, datasets, shards, faults_on=False, phase="faults cleared, DLQs redriven"
            )
            echo(second.line())
            result = run.finish(run_id, drained)
            injected = dict(vendor.state.injected)
            for row in run.per_source.values():
                for key, value in row.items():
                    if key.startswith("injected_"):
                        injected[key.removeprefix("injected_")] = injected.get(key.removeprefix("injected_"), 0) + int(
                            value
                        )
            injected["container_restarts"] = run.restarts
    return SoakResult([first, second], injected, result, total)
