"""Benchmark 7: a model of the AWS bill per 1,000,000 pages, against the floor of S3 PUTs + SQS
requests alone. The worker's own processing time per page is measured here (worker handler
in-process, moto for S3/SQS, a local fake vendor, batches of 10 pages of 100 records); the vendor's
latency is an assumption, written down with every price used."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from apilake.aws import cached_sources, default_clients, default_vendor_clients
from apilake.observability import std_logger
from apilake_dev.local.event_source import LambdaContextStub, sqs_event
from apilake_dev.vendors.fake import Dataset, FakeVendor
from bench.common import ROOT, Row

TARGET_RATIO = 1.5
PAGES = 1_000_000
# us-east-1 list prices (arm64 Lambda), USD
PRICE = {
    "lambda_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB request
    "s3_put": 0.005 / 1000,
    "s3_head": 0.0004 / 1000,
    "logs_ingested_gb": 0.50,
}
ASSUME = {
    "memory_gb": 0.5,  # WorkerMemorySize 512
    "batch_size": 10,  # WorkerBatchSize
    "vendor_latency_ms": 150.0,  # per page, added to the measured processing time
    "lambda_log_bytes_per_invocation": 350,  # Lambda's own START / END / REPORT lines
}


@dataclass
class Measured:
    ms_per_page: float
    page_puts: float  # per page: PutObject under raw/
    ledger_puts: float  # per page: PutObject under ledger/
    heads: float  # per page: HeadObject
    log_bytes: float  # per page: what the worker writes to stdout (JSON logs and EMF metrics)


def measure(batches: int = 10, records: int = 100) -> Measured:
    """The worker handler landing fan-out pages against local services (moto in-process, a local
    vendor), at its production log level: wall time, S3 requests and log bytes per page."""
    size = ASSUME["batch_size"]
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeVendor([Dataset("cost", total=int(batches * size * records))]) as vendor,
    ):
        sources = Path(folder) / "sources.yaml"
        sources.write_text(
            json.dumps(
                {
                    "version": 1,
                    "sources": [
                        {
                            "name": "cost",
                            "base_url": vendor.base_url,
                            "path": "/offset/cost",
                            "records_path": "items",
                            "pagination": {"type": "offset", "limit": records, "total_path": "total"},
                        }
                    ],
                }
            )
        )
        os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
        with mock_aws():
            for cached in (cached_sources, default_clients, default_vendor_clients):
                cached.cache_clear()
            boto3.client("s3").create_bucket(Bucket="lake")
            url = boto3.client("sqs").create_queue(QueueName="cost")["QueueUrl"]
            os.environ.update(
                APILAKE_SOURCE="cost",
                APILAKE_LAKE_BUCKET="lake",
                APILAKE_QUEUE_URL=url,
                APILAKE_SOURCES_FILE=str(sources),
            )
            worker = _load_worker()
            calls: Counter[str] = Counter()

            def count_call(model: Any, params: dict[str, Any], **_: Any) -> None:
                area = str(params.get("Key", "")).split("/")[0]
                calls[f"{model.name} {area}"] += 1

            default_clients().s3.meta.events.register("provide-client-params.s3.*", count_call)
            logs = io.StringIO()
            streams = [(h, h.setStream(logs)) for h in std_logger.handlers if isinstance(h, logging.StreamHandler)]
            elapsed = 0.0
            try:
                for batch in range(int(batches)):
                    messages = [
                        {
                            "MessageId": f"m{n}",
                            "ReceiptHandle": "r",
                            "Body": json.dumps(
                                {
                                    "run_id": "cost",
                                    "source": "cost",
                                    "ingestion_date": date(2026, 11, 26).isoformat(),
                                    "shard": "all",
                                    "page": batch * size + n + 1,
                                }
                            ),
                        }
                        for n in range(int(size))
                    ]
                    event = sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:cost")
                    with contextlib.redirect_stdout(logs):  # the EMF documents it prints
                        started = time.perf_counter()
                        result = worker.handler(event, LambdaContextStub("cost", 300))
                        elapsed += time.perf_counter() - started
                    assert result["batchItemFailures"] == [], result
            finally:
                for handler, stream in streams:
                    handler.setStream(stream)
    pages = batches * size
    return Measured(
        ms_per_page=elapsed / pages * 1000,
        page_puts=calls["PutObject raw"] / pages,
        ledger_puts=calls["PutObject ledger"] / pages,
        heads=(calls["HeadObject raw"] + calls["HeadObject ledger"]) / pages,
        log_bytes=len(logs.getvalue().encode()) / pages + ASSUME["lambda_log_bytes_per_invocation"] / size,
    )


def _load_worker() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cost_worker_app", ROOT / "functions" / "worker" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model(measured: Measured) -> dict[str, float]:
    """USD per 1,000,000 pages of a fan-out source, by line."""
    seconds = (measured.ms_per_page + ASSUME["vendor_latency_ms"]) / 1000
    per_request = 1 / ASSUME["batch_size"]  # the planner sends, Lambda's poller receives and deletes, in tens
    return {
        "lambda duration": PAGES * seconds * ASSUME["memory_gb"] * PRICE["lambda_gb_second"],
        "lambda requests": PAGES * per_request * PRICE["lambda_request"],
        "sqs send + receive + delete": PAGES * 3 * per_request * PRICE["sqs_request"],
        "s3 PUT page": PAGES * measured.page_puts * PRICE["s3_put"],
        "s3 PUT ledger": PAGES * measured.ledger_puts * PRICE["s3_put"],
        "s3 HEAD": PAGES * measured.heads * PRICE["s3_head"],
        "cloudwatch logs": PAGES * measured.log_bytes / 1e9 * PRICE["logs_ingested_gb"],
    }


def run() -> list[Row]:
    measured = measure()
    lines = model(measured)
    total = sum(lines.values())
    floor = PAGES * PRICE["s3_put"] + lines["sqs send + receive + delete"]
    detail = "; ".join(f"{name} ${value:.2f}" for name, value in lines.items())
    return [
        Row(
            "7 cost",
            "worker processing per page (measured, local)",
            measured.ms_per_page,
            "ms",
            "(reported)",
            None,
            f"+ {ASSUME['vendor_latency_ms']:.0f} ms assumed vendor latency; per page measured: "
            f"{measured.page_puts:.2f} page PUT, {measured.ledger_puts:.2f} ledger PUT, {measured.heads:.2f} HEAD, "
            f"{measured.log_bytes:,.0f} log bytes",
        ),
        Row("7 cost", "model per 1,000,000 pages", total, "USD", "(reported)", None, detail),
        Row("7 cost", "floor: S3 PUTs + SQS requests", floor, "USD", "(reported)", None),
        Row(
            "7 cost",
            "model / floor",
            total / floor,
            "x",
            f"<= {TARGET_RATIO}x",
            total / floor <= TARGET_RATIO,
        ),
    ]
