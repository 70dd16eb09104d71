"""Benchmark 6: peak RSS of the worker ingesting one ~50 MB page.

The page and the AWS emulation (moto's server) live in another process, so that only the worker
is counted: a fresh process running the worker handler on one message, reporting its peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
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


def run(megabytes: float = 50.0) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.json"
        page.write_bytes(page_bytes(int(megabytes * 1e6)))
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(page)], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port, moto_port = (int(p) for p in server.stdout.readline().split())
            sources = Path(folder) / "sources.yaml"
            sources.write_text(
                json.dumps(
                    {
                        "version": 1,
                        "sources": [
                            {
                                "name": "big",
                                "base_url": f"http://127.0.0.1:{port}",
                                "records_path": "records",
                                "pagination": {"type": "single"},
                                "max_page_bytes": 256 * 1024 * 1024,
                            }
                        ],
                    }
                )
            )
            env = {
                **os.environ,
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }
            out = subprocess.run(
                [sys.executable, "-c", WORKER, str(sources), str(ROOT / "functions" / "worker")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
    assert result["failures"] == [], result
    peak = result["peak_kb"] / 1024
    return [
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
