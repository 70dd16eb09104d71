"""Benchmark 3b: rate-limit use against a vendor that announces its limit in headers.

One source against a vendor allowing N requests per fixed window, which says in every response how many
are left and when the window resets, in whole seconds as vendors send them (the IETF ``RateLimit`` /
``RateLimit-Policy`` fields, or GitHub's ``X-RateLimit-*``; apilake.quota reads the other styles with the
same code). The vendor's windows start on whole seconds of its clock, as GitHub's, X's and GitLab's do; one
case moves both: the vendor's clock 1.3 s ahead of ours and its windows starting half a second past the
second (a limiter that starts a window at its first request and rounds its epoch reset up). Run through the
local flow (planner, SQS, 4 workers each spending its share, S3, all on moto's server) and through
`apilake ingest` (one process, 4 threads, exact): with no budget configured (the headers alone pace:
target >= 0.95 N, <= 0.5 % answered 429), and with a budget of N requests/s beside the headers (target
>= 0.9 N). Achieved = the requests let through in the vendor's windows that the run spans from start to
end (all but its first and last, the probe aside), over those windows' time: the share of the limit used,
as the vendor counts it.

    python -m bench.rate_headers [--seconds 30] [--limit 50] [--window 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from apilake_dev.vendors.fake import Dataset
from apilake_dev.vendors.quota_limited import HeaderStyle, QuotaVendor
from bench.common import ROOT, Row, page_number_sources, table, write
from bench.throughput import run_flow

LIMIT = 50.0  # N requests per second
WINDOW_SECONDS = 5.0  # the vendor's fixed window: N x W requests each
SECONDS = 30.0  # pages for about this long at N requests/s
RECORDS_PER_PAGE = 20
CONCURRENCY = 4
PYTHONPATH = os.pathsep.join(str(ROOT / part) for part in ("devtools", "layers/common", "."))
SKEWED = (1.3, 0.5)  # the vendor's clock this far ahead of ours, its windows this far past the whole second


@dataclass(frozen=True)
class Case:
    mode: str  # lambda: the local flow; ingest: apilake ingest
    style: HeaderStyle
    budgeted: bool  # a budget of N requests/s beside the headers
    clock_offset: float = 0.0
    phase: float = 0.0

    @property
    def skewed(self) -> bool:
        return bool(self.clock_offset or self.phase)

    def describe(self, budget: float | None) -> str:
        where = "local flow, 4 workers" if self.mode == "lambda" else "apilake ingest, 4 threads"
        vendor = f"skewed {self.style}" if self.skewed else f"{self.style} headers"
        return f"{where}, {vendor}, " + (f"budget {budget:g} req/s" if budget else "no budget")

    def vendor_detail(self) -> str:
        if not self.skewed:
            return ""
        return f"; the vendor's clock {self.clock_offset:+g} s, its windows {self.phase:g} s past the second"


@dataclass(frozen=True)
class Measured:
    achieved: float  # requests/s let through in the windows the run spans whole
    windows: int  # how many
    served: int
    limited: int  # answered 429
    seconds: float  # from the first request after the probe to the last

    @property
    def share_429(self) -> float:
        return self.limited / (self.served + self.limited)


def measure(case: Case, budget: float | None, limit: float, window: float, seconds: float) -> Measured:
    """One source against a vendor allowing ``limit`` x ``window`` requests a ``window``-second fixed window, said
    in ``case.style``'s headers: through the local flow (``lambda``: 4 workers, each its share) or `apilake ingest`
    (``ingest``: one process, 4 threads)."""
    mode, name = case.mode, "rate-headers"
    pages = int(limit * seconds)
    dataset = Dataset(name, total=pages * RECORDS_PER_PAGE)
    dataset.records(None, None)
    limits = {name: (int(limit * window), window)}
    vendor = QuotaVendor([dataset], limits, case.style, clock_offset=case.clock_offset, phase=case.phase)
    with tempfile.TemporaryDirectory() as folder, vendor:
        home = Path(folder)
        sources = page_number_sources(
            vendor,
            home / "sources.yaml",
            [name],
            rps=budget or 1.0,
            page_size=RECORDS_PER_PAGE,
            concurrency=CONCURRENCY,
        )
        if budget is None:  # no budget: the vendor's headers alone
            document = json.loads(sources.read_text())
            document["sources"][0]["budget"].pop("requests_per_second")
            sources.write_text(json.dumps(document))
        if mode == "lambda":
            event = {"sources": [name], "run_id": "bench-rate-headers", "ingestion_date": "2026-11-26"}
            run_flow(sources, home, event)
        else:
            command = [sys.executable, "-m", "apilake_cli.main", "--home", str(home / "home"), "ingest"]
            command += ["--sources", str(sources), "--ingestion-date", "2026-11-26", "--json"]
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": PYTHONPATH})
        served_at, limited = vendor.state.served_at[name][1:], vendor.state.limited[name]  # [0]: the probe
        counts = Counter(vendor.state.served_windows[name][1:])
    inner = sorted(counts)[1:-1]  # the run's first and last windows are its only in part
    served = len(served_at)
    measured = served_at[-1] - served_at[0]
    achieved = sum(counts[i] for i in inner) / (len(inner) * window) if inner else (served - 1) / measured
    return Measured(achieved, len(inner), served, limited, measured)


CASES: tuple[Case, ...] = (
    Case("lambda", "ietf", False),
    Case("lambda", "ietf", True),
    Case("ingest", "ietf", False),
    Case("ingest", "github", False),
    Case("ingest", "github", False, *SKEWED),
    Case("ingest", "ietf", True),
)


def run(limit: float = LIMIT, window: float = WINDOW_SECONDS, seconds: float = SECONDS) -> list[Row]:
    rows: list[Row] = []
    for case in CASES:
        budget = limit if case.budgeted else None
        target = 0.9 if case.budgeted else 0.95
        result = measure(case, budget, limit, window, seconds)
        what = case.describe(budget)
        rows.append(
            Row(
                "3b rate limit (headers)",
                f"achieved / N: {what}",
                result.achieved / limit,
                "x",
                f">= {target} x",
                result.achieved / limit >= target,
                f"{result.achieved:.1f} req/s in {result.windows} whole windows of the {result.seconds:.1f} s run "
                f"(N = {limit:g} req/s, {limit * window:g} requests a {window:g} s window{case.vendor_detail()})",
            )
        )
        rows.append(
            Row(
                "3b rate limit (headers)",
                f"requests answered 429: {what}",
                100 * result.share_429,
                "%",
                "<= 0.5 %",
                result.share_429 <= 0.005,
                f"{result.limited} of {result.served + result.limited}",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--limit", type=float, default=LIMIT)
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS)
    args = parser.parse_args()
    rows = run(args.limit, args.window, args.seconds)
    print(table(rows))
    print(f"written: {write(rows, 'rate-headers')}")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
