"""`make bench`: every benchmark of docs/benchmarks.md, one table with every figure and its target,
and the same as JSON under bench/results/.

1 and 2 throughput (clean, with 429s), 3 rate-limit use (3b: announced in headers), 4 cold start and zip
sizes, 5 planner fan-out, 6 memory (a worker, and apilake ingest), 7 cost model. About 17 minutes on a
2-core machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from apilake_dev.demo import planner_event
from bench import cold_start, cost, fanout, memory, rate_headers, throughput
from bench.common import Row, table, write


def main() -> int:
    started = time.monotonic()
    rows: list[Row] = []
    print("1, 2: throughput (3 interleaved trials)", flush=True)
    rows += throughput.throughput(planner_event())
    print("3: rate-limit use", flush=True)
    rows += throughput.rate_limit_use()
    print("3b: rate-limit use, the limit announced in headers", flush=True)
    rows += rate_headers.run()
    print("4: cold start (sam build)", flush=True)
    with tempfile.TemporaryDirectory() as build_dir:
        rows += cold_start.run(Path(build_dir))
    print("5: planner fan-out (3 interleaved trials)", flush=True)
    rows += fanout.run()
    print("6: memory", flush=True)
    rows += memory.run(50.0)
    print("7: cost model", flush=True)
    rows += cost.run()
    print()
    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s; written: {write(rows, 'bench')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
