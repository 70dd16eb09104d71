"""Benchmark 6: peak RSS of the worker ingesting one ~50 MB page.

The page and the AWS emulation (moto's server) live in another process, so that only the worker
is counted: a fresh process running the worker handler on one message, reporting its peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from bench.common import ROOT, Row

TARGET_MB = 300.0

SERVER = textwrap.dedent(
    """
    import http.server, logging, sys, threading
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    body = open(sys.argv[1], "rb").read()
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    server = http.server.HTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], moto.get_host_and_port()[1], flush=True)
    server.serve_forever()
    """
)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[2])

    def high_water_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, from fork)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    import boto3
    import app
    from apilake_dev.local.event_source import LambdaContextStub, sqs_event
    if True:
        boto3.client("s3").create_bucket(Bucket="lake")
        url = boto3.client("sqs").create_queue(QueueName="q")["QueueUrl"]
        os.environ.update(APILAKE_SOURCE="big", APILAKE_LAKE_BUCKET="lake", APILAKE_QUEUE_URL=url,
                          APILAKE_SOURCES_FILE=sys.argv[1])
        before = high_water_kb()
        item = {"run_id": "bench", "source": "big", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}
        message = {"MessageId": "m1", "ReceiptHandle": "r", "Body": json.dumps(item)}
        event = sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q")
        result = app.handler(event, LambdaContextStub("big", 300))
        after = high_water_kb()
        print(json.dumps({"failures": result["batchItemFailures"], "before_kb": before, "peak_kb": after}))
    """
)


def page_bytes(target: int) -> bytes:
    """A JSON page of ``target`` bytes or a little more: records of ~10 fields."""
    records, size, index = [], 20, 0
    while size < target:
        record = {
            "id": f"r-{index:08d}",
            "seq": index,
            "name": f"item {index}",
            "amount": index * 1.5,
            "currency": "EUR",
            "active": index % 3 == 0,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-11-25T12:00:00Z",
            "customer": {"id": f"c-{index % 2000:05d}", "country": "DE"},
            "tags": ["vip", "b2b"],
        }
        records.append(record)
        size += len(json.dumps(record)) + 2
        index += 1
    return json.dumps({"records": records}).encode()


INGEST = textwrap.dedent(
    """
    import json, sys
    from apilake_cli.main import main

    code = main(sys.argv[1:])
    for line in open("/proc/self/status"):  # VmHWM: this process's peak RSS
        if line.startswith("VmHWM:"):
            print(json.dumps({"code": code, "peak_kb": int(line.split()[1])}))
    """
)


@contextlib.contextmanager
def _serving(megabytes: float) -> Iterator[tuple[Path, int, int]]:
    """A ~``megabytes`` MB page served on 127.0.0.1 beside a moto server, in another process, and a sources
    file of one source fetching it: (the sources file, the page's port, moto's port)."""
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.json"
        page.write_bytes(page_bytes(int(megabytes * 1e6)))
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(page)], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port, moto_port = (int(p) for p in server.stdout.readline().split())
            sources = Path(folder) / "sources.yaml"
            source = {
                "name": "big",
                "base_url": f"http://127.0.0.1:{port}",
                "records_path": "records",
                "pagination": {"type": "single"},
                "max_page_bytes": 256 * 1024 * 1024,
            }
            sources.write_text(json.dumps({"version": 1, "sources": [source]}))
            yield sources, port, moto_port
        finally:
            server.terminate()


def _env(moto_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }


def run(megabytes: float = 50.0) -> list[Row]:
    with _serving(megabytes) as (sources, _, moto_port):
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(sources), str(ROOT / "functions" / "worker")],
            capture_output=True,
            text=True,
            env=_env(moto_port),
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failures"] == [], result
    peak = result["peak_kb"] / 1024
    rows = [
        Row(
            "6 memory",
            f"worker peak RSS, one {megabytes:.0f} MB page",
            peak,
            "MB",
            f"<= {TARGET_MB:.0f} MB",
            peak <= TARGET_MB,
            f"{result['before_kb'] / 1024:.0f} MB before the page",
        )
    ]
    return rows + run_ingest(megabytes)


def run_ingest(megabytes: float = 50.0) -> list[Row]:
    """``apilake ingest`` (one process, to a lake folder) landing the same page: its peak RSS."""
    with _serving(megabytes) as (sources, _, moto_port), tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [sys.executable, "-c", INGEST, "--home", home, "ingest", "--sources", str(sources), "--json"],
            capture_output=True,
            text=True,
            env=_env(moto_port),
            check=False,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        landed = sorted(str(p.relative_to(home)) for p in Path(home).rglob("page=*.json.gz"))
    if result["code"] != 0 or len(landed) != 1:
        code = result["code"]
        raise RuntimeError(f"apilake ingest did not land the page: exit {code}, {landed}: {out.stderr[-500:]}")
    peak = result["peak_kb"] / 1024
    return [
        Row(
            "6 memory",
            f"apilake ingest peak RSS, one {megabytes:.0f} MB page",
            peak,
            "MB",
            f"<= {TARGET_MB:.0f} MB",
            peak <= TARGET_MB,
            "one process: planner, fetch, write to a lake folder, ledger",
        )
    ]
