"""The integration harness: moto in-process for AWS, a real fake-vendor HTTP server on 127.0.0.1,
and the real handlers driven by the local SQS event source."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from apilake.lake import source_prefix
from apilake.ledger import Ledger, RunStatus
from apilake.names import dlq_name, queue_name
from apilake.observability import logger, std_logger
from apilake_dev.local.event_source import LambdaContextStub, PollStats, SqsEventSource
from apilake_dev.vendors.fake import Dataset, FakeVendor
from tests.conftest import load_handler_module

BUCKET = "apilake-test-lake"
STAGE = "test"
API_KEY = "k3y-d0-not-l0g-7f3a9c"
MAX_RECEIVE_COUNT = 3
READ_TIMEOUT = 1.0
RETRIES = {"max_attempts": 4, "base_delay_seconds": 0.01, "max_delay_seconds": 2, "max_inline_wait_seconds": 5}

# name -> (dataset, fake vendor style, source config); every pagination style once.
DATASETS = {
    "api-a": Dataset("ds-a", total=60, days=3),
    "api-b": Dataset("ds-b", total=43),
    "api-c": Dataset("ds-c", total=30),
    "api-d": Dataset("ds-d", total=21),
    "open-pages": Dataset("ds-e", total=35),
    "offsets": Dataset("ds-f", total=95),
    "one-page": Dataset("ds-g", total=12),
}


def source_configs(base_url: str) -> list[dict[str, Any]]:
    key_header = {"type": "api_key", "secret_name": "apilake/vendor", "location": "header", "name": "X-Api-Key"}
    key_query = {"type": "api_key", "secret_name": "apilake/vendor", "location": "query", "name": "api_key"}
    common = {
        "base_url": base_url,
        "record_id_path": "id",
        "retries": RETRIES,
        "timeouts": {"connect_seconds": 2, "read_seconds": READ_TIMEOUT},
        "auth": key_header,
    }
    return [
        {
            **common,
            "name": "api-a",
            "path": "/page_number/ds-a",
            "records_path": "data",
            "pagination": {"type": "page_number", "page_size": 7, "total_path": "meta.total"},
            "sharding": {"type": "daily", "start_param": "since", "end_param": "until", "lookback_days": 3},
        },
        {
            **common,
            "name": "api-b",
            "path": "/cursor/ds-b",
            "params": {"limit": "10"},
            "records_path": "results",
            "pagination": {"type": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more"},
        },
        {
            **common,
            "name": "api-c",
            "path": "/next_url/ds-c",
            "params": {"per_page": "10"},
            "records_path": "data",
            "pagination": {"type": "next_url", "next_url_path": "links.next"},
            "auth": key_query,
        },
        {
            **common,
            "name": "api-d",
            "path": "/link_header/ds-d",
            "params": {"per_page": "10"},
            "records_path": "",
            "pagination": {"type": "link_header"},
        },
        {
            **common,
            "name": "open-pages",
            "path": "/page_number/ds-e",
            "params": {"no_total": "1"},
            "records_path": "data",
            "pagination": {"type": "page_number", "page_size": 7},
        },
        {
            **common,
            "name": "offsets",
            "path": "/offset/ds-f",
            "records_path": "items",
            "pagination": {"type": "offset", "limit": 10, "total_path": "total"},
        },
        {
            **common,
            "name": "one-page",
            "path": "/single/ds-g",
            "records_path": "records",
            "pagination": {"type": "single"},
        },
    ]


@dataclass
class Harness:
    s3: Any
    sqs: Any
    vendor: FakeVendor
    sources_path: Path
    queues: dict[str, str]
    dlqs: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    planner: ModuleType
    worker: ModuleType

    def plan(self, event: dict[str, Any]) -> dict[str, Any]:
        self.monkeypatch.setenv("APILAKE_LAKE_BUCKET", BUCKET)
        self.monkeypatch.setenv("APILAKE_STAGE", STAGE)
        self.monkeypatch.setenv("APILAKE_SOURCES_FILE", str(self.sources_path))
        result: dict[str, Any] = self.planner.handler(event, LambdaContextStub("planner", 300))
        return result

    def event_source(self, source: str, batch_size: int = 10, timeout_seconds: float = 60) -> SqsEventSource:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            self.monkeypatch.setenv("APILAKE_SOURCE", source)
            self.monkeypatch.setenv("APILAKE_LAKE_BUCKET", BUCKET)
            self.monkeypatch.setenv("APILAKE_QUEUE_URL", self.queues[source])
            self.monkeypatch.setenv("APILAKE_SOURCES_FILE", str(self.sources_path))
            return self.worker.handler(event, context)

        return SqsEventSource(
            self.sqs,
            self.queues[source],
            invoke,
            f"worker-{source}",
            batch_size=batch_size,
            timeout_seconds=timeout_seconds,
        )

    def drain(self, source: str, max_seconds: float = 60) -> PollStats:
        return self.event_source(source).drain(max_seconds=max_seconds)

    def send(self, source: str, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.queues[source], MessageBody=text)

    def keys(self, source: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=source_prefix(source))
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def records(self, source: str) -> list[dict[str, Any]]:
        found = []
        for key in self.keys(source):
            body = gzip.decompress(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            found += [json.loads(line) for line in body.splitlines()]
        return found

    def dlq_bodies(self, source: str) -> list[str]:
        messages = self.sqs.receive_message(QueueUrl=self.dlqs[source], MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        return [m["Body"] for m in messages]

    def status(self, run_id: str) -> RunStatus:
        ledger = Ledger(self.s3, BUCKET)
        manifest = ledger.read_manifest(run_id)
        assert manifest is not None, f"no manifest for run {run_id}"
        return ledger.status(manifest)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log record of the test, formatted as in Lambda (JSON, tracebacks included)."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logger.registered_formatter)
    std_logger.addHandler(handler)
    yield sink
    std_logger.removeHandler(handler)


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(list(DATASETS.values()), api_key=API_KEY) as fake:
        yield fake


@contextmanager
def emulated_harness(
    vendor: FakeVendor, sources: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """moto with the lake bucket, the vendor's secret and, per source, its queue and DLQ (named as the
    planner finds them), around ``sources`` written as the sources file."""
    sources_path = tmp_path / "sources.yaml"
    sources_path.write_text(yaml.safe_dump({"version": 1, "sources": sources}, sort_keys=False))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="apilake/vendor", SecretString=API_KEY
        )
        s3.create_bucket(Bucket=BUCKET)
        queues, dlqs = {}, {}
        for name in (source["name"] for source in sources):
            dlqs[name] = sqs.create_queue(QueueName=dlq_name(STAGE, name))["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=dlqs[name], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            redrive_policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
            queues[name] = sqs.create_queue(
                QueueName=queue_name(STAGE, name),
                Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive_policy},
            )["QueueUrl"]
        yield Harness(
            s3=s3,
            sqs=sqs,
            vendor=vendor,
            sources_path=sources_path,
            queues=queues,
            dlqs=dlqs,
            monkeypatch=monkeypatch,
            planner=load_handler_module("planner"),
            worker=load_handler_module("worker"),
        )


@pytest.fixture
def harness(vendor: FakeVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with emulated_harness(vendor, source_configs(vendor.base_url), tmp_path, monkeypatch) as built:
        yield built
