"""The local SQS flow as a contender, as bench/throughput.py runs it: a fresh emulator (moto's
server in this process), the deployment generated for the sources file, the planner handler, then
the worker containers (each source at its max_concurrency) until every queue is empty; the run
must end complete with empty DLQs. Run by the dev environment::

    python -m bench.peers.local_flow --sources FILE --datasets a,b --records-per-dataset N

Prints one JSON line: {"setup_seconds": emulator + deployment + the containers' fork server,
"seconds": plan to drained, "verify_seconds": reading the raw zone back, "pages", "throttled",
"landed": count.Landed of raw/}. The harness takes setup and verify out of this process's wall time:
the other contenders find their emulator running and are counted after they exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from apilake.ledger import Ledger
from apilake.observability import Metric
from apilake_dev.demo import planner_event
from apilake_dev.local.containers import start_fork_server
from apilake_dev.local.run import LocalRun
from bench.common import quiet
from bench.peers.count import bucket_blobs, expected_ids, tally
from bench.throughput import VISIBILITY_SECONDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the local SQS flow, timed from plan to drained")
    parser.add_argument("--sources", type=Path, required=True)
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--records-per-dataset", type=int, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    start_fork_server()  # the containers' shared imports, before the clock (as make bench does)
    with (
        tempfile.TemporaryDirectory() as home,
        LocalRun(args.sources, Path(home), visibility_timeout=VISIBILITY_SECONDS, echo=quiet) as run,
    ):
        setup = time.monotonic() - started
        start = time.monotonic()
        run_id, planner_error = run.plan(planner_event())
        drained = run.drain(max_seconds=900, check_every=0.5)
        seconds = time.monotonic() - start
        if planner_error or not drained or run_id is None:
            raise SystemExit(f"local flow did not finish: planner {planner_error}, drained {drained}")
        verify_start = time.monotonic()
        ledger = Ledger(run.s3, run.deployment.bucket)
        manifest = ledger.read_manifest(run_id)
        status = ledger.status(manifest) if manifest else None
        dead = {source: len(run.dlq_messages(source)) for source in run.deployment.dlqs}
        if status is None or not status.complete or any(dead.values()):
            raise SystemExit(f"local flow incomplete: status {status}, DLQs {dead}")
        pages = sum(shard.landed_pages for source in status.sources for shard in source.shards)
        throttled = sum(int(row.get(Metric.THROTTLED.value, 0)) for row in run.per_source.values())
        expected = expected_ids(args.datasets.split(","), args.records_per_dataset)
        landed = tally(bucket_blobs(run.s3, run.deployment.bucket, "raw/"), expected)
        verify = time.monotonic() - verify_start
    print(
        json.dumps(
            {
                "setup_seconds": setup,
                "seconds": seconds,
                "verify_seconds": verify,
                "pages": pages,
                "throttled": throttled,
                "landed": asdict(landed),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
