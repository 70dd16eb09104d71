"""Benchmark 5: the planner fanning 100,000 work items out to the emulator's queue, against a raw
parallel SendMessageBatch loop with the same thread count (8) sending the same message bodies.

The planner runs as in the local flow (its handler in a container process, moto's server playing
SQS and S3): one source, daily shards, ten days of 10,000 pages each, learnt by probing page 1 of
each day. The raw loop runs in its own process with its clients made before its clock starts.
Each run gets a fresh emulator; medians of interleaved runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

from apilake.messages import WorkItem
from apilake.queue import encode
from apilake_dev.local.containers import start_fork_server
from apilake_dev.local.run import LocalRun
from apilake_dev.vendors.fake import Dataset, FakeVendor
from bench.common import BENCH_SOURCES, Row, median, quiet

ITEMS = 100_000
DAYS = 10
THREADS = 8  # QueueSender's default
TRIALS = 3
SOURCES = BENCH_SOURCES  # only the first is planned
INGESTION = date(2026, 11, 26)
RUN_ID = "bench-fanout"

RAW_LOOP = textwrap.dedent(
    """
    import json, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import boto3
    endpoint, queue_url, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    bodies = json.loads(sys.stdin.read())
    local = threading.local()
    def client():
        if not hasattr(local, "sqs"):
            local.sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        return local.sqs
    def send(start):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
        failed = client().send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(failed)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: client(), range(threads)))
        started = time.monotonic()
        list(pool.map(send, range(0, len(bodies), 10)))
        print(json.dumps({"seconds": time.monotonic() - started}))
    """
)


def _sources_file(vendor: FakeVendor, target: Path) -> Path:
    page_number = {"type": "page_number", "page_size": 1, "total_path": "meta.total"}
    document = {
        "version": 1,
        "sources": [
            {
                "name": name,
                "base_url": vendor.base_url,
                "path": "/page_number/fanout",
                "records_path": "data",
                "pagination": page_number,
                "sharding": {"type": "daily", "start_param": "since", "end_param": "until", "lookback_days": DAYS},
            }
            for name in SOURCES
        ],
    }
    target.write_text(json.dumps(document))
    return target


def _bodies() -> list[str]:
    """The messages the planner sends, encoded the same way (for the raw loop)."""
    per_day = ITEMS // DAYS
    return [
        encode(
            WorkItem(
                run_id=RUN_ID,
                source=SOURCES[0],
                ingestion_date=INGESTION,
                shard=(INGESTION - timedelta(days=day)).isoformat(),
                page=page,
            )
        )
        for day in range(1, DAYS + 1)
        for page in range(1, per_day + 1)
    ]


def _in_queue(run: LocalRun) -> int:
    attributes = run.sqs.get_queue_attributes(
        QueueUrl=run.deployment.queues[SOURCES[0]], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def planner_seconds(sources: Path, home: Path) -> float:
    event = {"sources": [SOURCES[0]], "run_id": RUN_ID, "ingestion_date": INGESTION.isoformat()}
    with LocalRun(sources, home, echo=quiet) as run:
        started = time.monotonic()
        run_id, error = run.plan(event)
        seconds = time.monotonic() - started
        queued = _in_queue(run)
    if error or run_id != RUN_ID or queued != ITEMS:
        raise RuntimeError(f"planner: error {error}, run {run_id}, {queued} of {ITEMS} messages queued")
    return seconds


def raw_loop_seconds(sources: Path, home: Path, bodies: list[str]) -> float:
    with LocalRun(sources, home, echo=quiet) as run:
        out = subprocess.run(
            [sys.executable, "-c", RAW_LOOP, run.aws.endpoint, run.deployment.queues[SOURCES[0]], str(THREADS)],
            input=json.dumps(bodies),
            capture_output=True,
            text=True,
            env={**os.environ, **run.aws.env()},
            check=True,
        )
        queued = _in_queue(run)
    if queued != ITEMS:
        raise RuntimeError(f"raw loop: {queued} of {ITEMS} messages queued")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def run(trials: int = TRIALS) -> list[Row]:
    dataset = Dataset("fanout", total=ITEMS, days=DAYS, last_day=INGESTION)
    dataset.records(None, None)
    bodies = _bodies()
    start_fork_server()
    planner, raw = [], []
    with tempfile.TemporaryDirectory() as folder, FakeVendor([dataset]) as vendor:
        home = Path(folder)
        sources = _sources_file(vendor, home / "sources.yaml")
        for trial in range(trials):
            planner.append(ITEMS / planner_seconds(sources, home))
            raw.append(ITEMS / raw_loop_seconds(sources, home, bodies))
            print(f"  trial {trial + 1}: planner {planner[-1]:,.0f} messages/s, raw loop {raw[-1]:,.0f}", flush=True)
    ratio = median(planner) / median(raw)
    return [
        Row("5 fan-out", f"planner, {ITEMS:,} work items", median(planner), "msg/s", "", None, f"median of {trials}"),
        Row("5 fan-out", "raw SendMessageBatch loop, 8 threads", median(raw), "msg/s", "", None, f"median of {trials}"),
        Row(
            "5 fan-out",
            "planner / raw loop",
            ratio,
            "x",
            ">= 0.8 x",
            ratio >= 0.8,
            f"{DAYS} daily shards probed, manifest written; the raw loop's clock starts at its first send",
        ),
    ]
