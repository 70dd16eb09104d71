"""The shape of issue 11's hanging local flow, run n times: one source, 2,000 page_number fan-out
pages of 100 records, 8 workers, the template's visibility timeout (1,800 s), each run with a fresh
emulator and home. Per run: drained or not, wall seconds (planner to empty queues), pages landed,
and every in-flight wait the drain reported (a lost delete shows as one).

    .venv/bin/python -m bench.lost_deletes [runs] [max seconds per drain]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from apilake.ledger import Ledger
from apilake_dev.local.containers import start_fork_server
from apilake_dev.local.run import LocalRun
from apilake_dev.vendors.fake import Dataset, FakeVendor
from bench.common import page_number_sources

SOURCE = "bench"
PAGES = 2000
RECORDS_PER_PAGE = 100
WORKERS = 8


def sources_file(vendor: FakeVendor, target: Path) -> Path:
    return page_number_sources(vendor, target, [SOURCE], rps=10_000, page_size=RECORDS_PER_PAGE, concurrency=WORKERS)


def one_run(vendor: FakeVendor, index: int, max_seconds: float) -> dict[str, object]:
    said: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        sources = sources_file(vendor, home / "sources.yaml")
        with LocalRun(sources, home, echo=said.append) as run:
            started = time.monotonic()
            run_id, planner_error = run.plan(
                {"sources": [SOURCE], "run_id": f"lost-deletes-{index}", "ingestion_date": "2026-11-26"}
            )
            drained = run.drain(max_seconds=max_seconds, check_every=0.5)
            seconds = time.monotonic() - started
            ledger = Ledger(run.s3, run.deployment.bucket)
            manifest = ledger.read_manifest(run_id) if run_id else None
            status = ledger.status(manifest) if manifest else None
            landed = sum(shard.landed_pages for s in status.sources for shard in s.shards) if status else 0
            stats = run.per_source.get(SOURCE, {})
    waits = [line.strip() for line in said if "waiting on" in line or "not drained" in line]
    return {
        "run": index,
        "drained": drained,
        "seconds": round(seconds, 1),
        "pages": landed,
        "planner_error": planner_error,
        "not_deleted": int(stats.get("not_deleted", 0)),
        "delete_retries": int(stats.get("delete_retries", 0)),
        "in_flight_waits": waits,
    }


def main(runs: int = 5, max_seconds: float = 300) -> int:
    start_fork_server()
    dataset = Dataset(SOURCE, total=PAGES * RECORDS_PER_PAGE)
    dataset.records(None, None)  # made once, before any clock starts
    results = []
    with FakeVendor([dataset]) as vendor:
        for index in range(1, runs + 1):
            results.append(one_run(vendor, index, max_seconds))
            print(json.dumps(results[-1]), flush=True)
    hung = sum(not r["drained"] for r in results)
    print(f"{runs} runs: {runs - hung} drained, {hung} not; seconds {[r['seconds'] for r in results]}")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main(*(int(arg) for arg in sys.argv[1:3])))
