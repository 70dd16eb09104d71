"""Benchmarks 1 and 2 (throughput, clean and with 1 % of pages throttled) and 3 (rate-limit use).

1: the local flow (planner, SQS, the four workers at their template concurrency of 2 = 8 at once,
S3, all on moto's server) lands 2,000 fan-out pages of 100 records from a fast local fake vendor;
against it, in the same emulator and against the same vendor, a naive baseline: 8 threads, one
requests session and one S3 client each, GET + gzip + ``put_object`` of every page. Medians of
3 interleaved runs (apilake clean, baseline, apilake with faults).
2: the same flow with 1 % of pages answered 429 + ``Retry-After: 1`` on their first request.
3: one source against a vendor that answers at most N requests in any second (429 beyond it);
the source's budget is N requests/s over its 4 workers: achieved requests/s over N, and the
share of requests answered 429.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apilake.ledger import Ledger
from apilake.observability import Metric
from apilake_dev.local.containers import CONTAINER_NICENESS, start_fork_server
from apilake_dev.local.run import LocalRun
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault
from bench.common import BENCH_SOURCES, Row, median, page_number_sources, quiet

SOURCES = BENCH_SOURCES  # four sources at concurrency 2 each: 8 workers at once
PAGES = 2000
RECORDS_PER_PAGE = 100
THREADS = 8
TRIALS = 3
THROTTLED_EVERY = 100  # 1 % of pages: 429 + Retry-After: 1 on their first request
RATE_LIMIT = 50.0  # benchmark 3: N requests per second, enforced by the vendor
RATE_SECONDS = 30.0  # benchmark 3: pages for about this long at N requests/s
RATE_RECORDS_PER_PAGE = 20
# Workers fetch a batch's pages one after the other: a source reaches its budget when concurrency x
# (1 / seconds per page) exceeds it. Locally a page takes ~50 ms: 4 workers for 50 requests/s.
RATE_CONCURRENCY = 4
# Each worker paces its share evenly, but the workers are not in step: a budget at the vendor's very
# limit sees a 429 whenever their requests bunch up in one second. docs/configuration.md advises 95 %.
RATE_BUDGET_SHARE = 0.95
VISIBILITY_SECONDS = 60
FAST_BUDGET = 10_000.0  # requests/s: pacing off, for benchmarks 1 and 2

BASELINE = textwrap.dedent(
    """
    import gzip, json, os, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import boto3, requests
    endpoint, bucket, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.nice(int(sys.argv[4]))  # as the flow's containers
    urls = json.loads(sys.stdin.read())
    local = threading.local()
    def clients():
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
        return local.session, local.s3
    def land(job):
        key, url = job
        session, s3 = clients()
        response = session.get(url, timeout=30)
        response.raise_for_status()
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(response.content))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: clients(), range(threads)))  # sessions and clients made before the clock starts
        start = time.monotonic()
        list(pool.map(land, urls))
        print(json.dumps({"seconds": time.monotonic() - start}))
    """
)


@dataclass
class FlowRun:
    seconds: float
    pages: int
    throttled: int

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds


def _sources_file(vendor: FakeVendor, target: Path, rps: float, page_size: int, concurrency: int = 2) -> Path:
    """The benchmark's four sources, each a page_number fan-out over its own fake vendor dataset."""
    return page_number_sources(vendor, target, SOURCES, rps=rps, page_size=page_size, concurrency=concurrency)


def run_flow(sources: Path, home: Path, event: dict[str, Any], template: dict[str, Any] | None = None) -> FlowRun:
    """Plan and drain once in a fresh emulator (deployed from ``template``, default template.yaml);
    timed from the planner's start to empty queues. Raises unless every planned page landed and the
    run is complete with empty DLQs."""
    with LocalRun(sources, home, visibility_timeout=VISIBILITY_SECONDS, echo=quiet, template=template) as run:
        start = time.monotonic()
        run_id, planner_error = run.plan(event)
        drained = run.drain(max_seconds=900, check_every=0.5)
        seconds = time.monotonic() - start
        if planner_error or not drained or run_id is None:
            raise RuntimeError(f"local flow did not finish: planner {planner_error}, drained {drained}")
        ledger = Ledger(run.s3, run.deployment.bucket)
        manifest = ledger.read_manifest(run_id)
        status = ledger.status(manifest) if manifest else None
        dead = {source: len(run.dlq_messages(source)) for source in run.deployment.dlqs}
        if status is None or not status.complete or any(dead.values()):
            raise RuntimeError(f"local flow incomplete: status {status}, DLQs {dead}")
        pages = sum(shard.landed_pages for source in status.sources for shard in source.shards)
        throttled = sum(int(row.get(Metric.THROTTLED.value, 0)) for row in run.per_source.values())
        return FlowRun(seconds, pages, throttled)


def run_baseline(sources: Path, home: Path, vendor: FakeVendor, page_size: int) -> float:
    """The naive baseline in the emulator of a fresh local session: seconds for every page."""
    pages_per_source = PAGES // len(SOURCES)
    jobs = [
        (
            f"baseline/{name}/page={page:05d}.json.gz",
            f"{vendor.base_url}/page_number/{name}?page={page}&per_page={page_size}",
        )
        for page in range(1, pages_per_source + 1)
        for name in SOURCES
    ]
    with LocalRun(sources, home, echo=quiet) as run:
        bucket = "baseline-bench"
        run.s3.create_bucket(Bucket=bucket)
        out = subprocess.run(
            [sys.executable, "-c", BASELINE, run.aws.endpoint, bucket, str(THREADS), str(CONTAINER_NICENESS)],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            env={**os.environ, **run.aws.env()},
            check=True,
        )
        landed = run.s3.list_objects_v2(Bucket=bucket, MaxKeys=PAGES + 1).get("KeyCount", 0)
        if landed != len(jobs):
            raise RuntimeError(f"baseline landed {landed} of {len(jobs)} pages")
        return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def _throttle_one_percent(vendor: FakeVendor) -> int:
    pages = PAGES // len(SOURCES)
    hit = 0
    for name in SOURCES:
        for page in range(THROTTLED_EVERY // 2, pages + 1, THROTTLED_EVERY):
            vendor.inject("page_number", name, page, Fault.throttle(retry_after=1))
            hit += 1
    return hit


@contextlib.contextmanager
def _vendor(records_per_source: int, rate_limits: dict[str, float] | None = None) -> Iterator[FakeVendor]:
    sets = [Dataset(name, total=records_per_source) for name in SOURCES]
    for dataset in sets:
        dataset.records(None, None)  # made once, before any clock starts
    with FakeVendor(sets, rate_limits=rate_limits) as vendor:
        yield vendor


def throughput(event: dict[str, Any]) -> list[Row]:
    clean: list[FlowRun] = []
    faulty: list[FlowRun] = []
    baseline: list[float] = []
    injected = 0
    start_fork_server()  # the containers' shared imports, before any clock starts (the baseline's too)
    with tempfile.TemporaryDirectory() as folder, _vendor(PAGES // len(SOURCES) * RECORDS_PER_PAGE) as vendor:
        home = Path(folder)
        sources = _sources_file(vendor, home / "sources.yaml", FAST_BUDGET, RECORDS_PER_PAGE)
        for trial in range(TRIALS):
            clean.append(run_flow(sources, home, event))
            baseline.append(run_baseline(sources, home, vendor, RECORDS_PER_PAGE))
            injected = _throttle_one_percent(vendor)
            faulty.append(run_flow(sources, home, event))
            print(
                f"  trial {trial + 1}: apilake {clean[-1].pages_per_second:.1f} pages/s, baseline "
                f"{PAGES / baseline[-1]:.1f} pages/s, apilake with 429s {faulty[-1].pages_per_second:.1f} pages/s "
                f"({faulty[-1].throttled} throttled)",
                flush=True,
            )
    apilake_rate = median([r.pages_per_second for r in clean])
    baseline_rate = median([PAGES / s for s in baseline])
    faulty_rate = median([r.pages_per_second for r in faulty])
    return [
        Row("1 throughput", "apilake local flow", apilake_rate, "pages/s", "", None, f"median of {TRIALS}"),
        Row("1 throughput", "naive baseline (8 threads)", baseline_rate, "pages/s", "", None, f"median of {TRIALS}"),
        Row(
            "1 throughput",
            "apilake / baseline",
            apilake_rate / baseline_rate,
            "x",
            ">= 0.8 x",
            apilake_rate / baseline_rate >= 0.8,
            f"{PAGES} pages x {RECORDS_PER_PAGE} records, 4 sources x 2 workers",
        ),
        Row(
            "2 with 429s", "apilake, 1 % of pages 429", faulty_rate, "pages/s", "", None, f"{injected} pages throttled"
        ),
        Row(
            "2 with 429s",
            "apilake with 429s / clean",
            faulty_rate / apilake_rate,
            "x",
            ">= 0.8 x",
            faulty_rate / apilake_rate >= 0.8,
            "Retry-After: 1 on the first request",
        ),
    ]


def rate_limit_use(
    limit: float = RATE_LIMIT, budget: float | None = None, concurrency: int = RATE_CONCURRENCY
) -> list[Row]:
    """One source with a budget of ``budget`` (default: 95 % of the limit) requests/s over ``concurrency``
    workers, against a vendor answering at most ``limit`` requests in any second. The deployment is
    the template generated from that sources file, as `make template` would."""
    budget = budget or limit * RATE_BUDGET_SHARE
    pages = int(limit * RATE_SECONDS)
    name = SOURCES[0]
    event = {"sources": [name], "run_id": "bench-rate", "ingestion_date": "2026-11-26"}
    with (
        tempfile.TemporaryDirectory() as folder,
        _vendor(pages * RATE_RECORDS_PER_PAGE, rate_limits={name: limit}) as vendor,
    ):
        home = Path(folder)
        sources = _sources_file(vendor, home / "sources.yaml", budget, RATE_RECORDS_PER_PAGE, concurrency)
        flow = run_flow(sources, home, event)
        served_at, limited = vendor.state.served_at[name][1:], vendor.state.limited[name]  # [0]: the probe
    served = len(served_at)
    seconds = served_at[-1] - served_at[0]
    achieved = (served - 1) / seconds
    share = limited / (served + limited)
    return [
        Row(
            "3 rate limit",
            f"achieved / N (N = {limit:g} req/s)",
            achieved / limit,
            "x",
            ">= 0.9 x",
            achieved / limit >= 0.9,
            f"{achieved:.1f} req/s from the workers' first request to their last ({seconds:.1f} s; "
            f"{flow.pages} pages); budget {budget:g} req/s, concurrency {concurrency}",
        ),
        Row(
            "3 rate limit",
            "requests answered 429",
            100 * share,
            "%",
            "<= 1 %",
            share <= 0.01,
            f"{limited} of {served + limited}",
        ),
    ]
