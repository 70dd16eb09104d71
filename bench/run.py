"""`make bench`: run the benchmarks, print one table with every figure and its target, write JSON.

Implemented so far: 4 (cold start, zip sizes), 6 (memory) and 7 (cost model). See
docs/benchmarks.md for what each figure means and which are still to come.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import cold_start, cost, memory
from bench.common import table, write


def main() -> int:
    with tempfile.TemporaryDirectory() as build_dir:
        rows = cold_start.run(Path(build_dir))
    rows += memory.run(50.0)
    rows += cost.run()
    print(table(rows))
    print(f"\nwritten: {write(rows, 'bench')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
