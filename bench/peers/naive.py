"""The naive loop: what a developer writes in an afternoon. A thread pool, one requests session per
thread, GET every page, gzip the body as it came, write it to a local file or ``put_object`` it to
S3. Page 1 of each dataset first (its ``meta.total`` says how many pages there are), then every
other page at once. A 429 waits its ``Retry-After`` (seconds) and asks again, at most 5 times.

Standalone (requests, and boto3 for S3), run as a script by the harness::

    python bench/peers/naive.py --base-url URL --datasets a,b --records 100 --threads 8 --out DIR
    python bench/peers/naive.py ... --s3-endpoint URL --bucket B
    python bench/peers/naive.py ... --discard      (GET only: the API's ceiling)

Prints one JSON line: {"seconds": ..., "pages": ..., "throttled": 429s seen}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ATTEMPTS = 5


class Loop:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.local = threading.local()
        self.throttled = 0
        self.lock = threading.Lock()

    def clients(self) -> tuple[requests.Session, Any]:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.s3 = None
            if self.args.s3_endpoint:
                import boto3

                self.local.s3 = boto3.session.Session().client(
                    "s3", endpoint_url=self.args.s3_endpoint, region_name="us-east-1"
                )
        return self.local.session, self.local.s3

    def get(self, dataset: str, page: int) -> bytes:
        session, _ = self.clients()
        url = f"{self.args.base_url}/page_number/{dataset}"
        for _ in range(ATTEMPTS):
            response = session.get(url, params={"page": page, "per_page": self.args.records}, timeout=30)
            if response.status_code == 429:
                with self.lock:
                    self.throttled += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            return response.content
        raise RuntimeError(f"{url} page {page}: still 429 after {ATTEMPTS} attempts")

    def land(self, job: tuple[str, int]) -> bytes:
        dataset, page = job
        body = self.get(dataset, page)
        if self.args.discard:
            return body
        key = f"{dataset}/page={page:05d}.json.gz"
        _, s3 = self.clients()
        if s3 is not None:
            s3.put_object(Bucket=self.args.bucket, Key=key, Body=gzip.compress(body))
        else:
            target = Path(self.args.out) / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gzip.compress(body))
        return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the naive threaded loop")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--records", type=int, required=True, help="records per page (per_page)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--out", help="a local folder")
    parser.add_argument("--s3-endpoint", help="or S3 at this endpoint")
    parser.add_argument("--bucket", help="the bucket (with --s3-endpoint)")
    parser.add_argument("--discard", action="store_true", help="GET only, land nothing: what the API can serve")
    args = parser.parse_args(argv)
    loop = Loop(args)
    datasets = args.datasets.split(",")
    start = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        firsts = list(pool.map(loop.land, [(d, 1) for d in datasets]))
        totals = [json.loads(body)["meta"]["total"] for body in firsts]
        pages = [math.ceil(total / args.records) for total in totals]
        rest = [(d, p) for d, last in zip(datasets, pages, strict=True) for p in range(2, last + 1)]
        list(pool.map(loop.land, rest))
    seconds = time.monotonic() - start
    print(json.dumps({"seconds": seconds, "pages": len(firsts) + len(rest), "throttled": loop.throttled}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
