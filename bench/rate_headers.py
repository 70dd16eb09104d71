"""Benchmark 3b: rate-limit use against a vendor that announces its limit in headers.

One source on the local flow (planner, SQS, its workers at concurrency 4, S3, all on moto's server)
against a vendor allowing N requests per fixed window, which says in every response how many are left
and when the window resets (the IETF ``RateLimit`` / ``RateLimit-Policy`` fields, whole seconds as
vendors send them; the other styles are read by the same code, apilake.quota). Two runs: no budget
configured (the headers alone pace the workers: target >= 0.95 N, <= 0.5 % answered 429), and a budget
of N requests/s beside the headers (target >= 0.9 N). Achieved = requests let through from the workers'
first to their last, over that time.

    python -m bench.rate_headers [--seconds 30] [--limit 50] [--window 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from apilake_dev.vendors.fake import Dataset
from apilake_dev.vendors.quota_limited import HeaderStyle, QuotaVendor
from bench.common import Row, page_number_sources, table, write
from bench.throughput import run_flow

LIMIT = 50.0  # N requests per second
WINDOW_SECONDS = 5.0  # the vendor's fixed window: N x W requests each
SECONDS = 30.0  # pages for about this long at N requests/s
RECORDS_PER_PAGE = 20
CONCURRENCY = 4
STYLE: HeaderStyle = "ietf"


def measure(budget: float | None, limit: float, window: float, seconds: float) -> tuple[float, float, int, int, float]:
    """(achieved requests/s, 429 share, requests let through, requests answered 429, seconds measured)."""
    name = "rate-headers"
    pages = int(limit * seconds)
    dataset = Dataset(name, total=pages * RECORDS_PER_PAGE)
    dataset.records(None, None)
    limits = {name: (int(limit * window), window)}
    with tempfile.TemporaryDirectory() as folder, QuotaVendor([dataset], limits, STYLE) as vendor:
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
        event = {"sources": [name], "run_id": "bench-rate-headers", "ingestion_date": "2026-11-26"}
        run_flow(sources, home, event)
        served_at, limited = vendor.state.served_at[name][1:], vendor.state.limited[name]  # [0]: the probe
    served = len(served_at)
    measured = served_at[-1] - served_at[0]
    return (served - 1) / measured, limited / (served + limited), served, limited, measured


def run(limit: float = LIMIT, window: float = WINDOW_SECONDS, seconds: float = SECONDS) -> list[Row]:
    rows: list[Row] = []
    for budget, target in ((None, 0.95), (limit, 0.9)):
        achieved, share, served, limited, measured = measure(budget, limit, window, seconds)
        what = "no budget" if budget is None else f"budget {budget:g} req/s"
        rows.append(
            Row(
                "3 rate limit (headers)",
                f"achieved / N, {what} (N = {limit:g} req/s)",
                achieved / limit,
                "x",
                f">= {target} x",
                achieved / limit >= target,
                f"{achieved:.1f} req/s over {measured:.1f} s; {limit * window:g} requests a {window:g} s window, "
                f"announced in {STYLE} headers; concurrency {CONCURRENCY}",
            )
        )
        if budget is None:
            rows.append(
                Row(
                    "3 rate limit (headers)",
                    f"requests answered 429, {what}",
                    100 * share,
                    "%",
                    "<= 0.5 %",
                    share <= 0.005,
                    f"{limited} of {served + limited}",
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
