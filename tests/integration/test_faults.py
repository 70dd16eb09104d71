"""Vendor faults through the real handlers: throttling, 5xx, slow and malformed responses, parking."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from apilake.aws import default_clients
from apilake.lake import page_key
from apilake.observability import Metric, totals
from apilake_dev.local.event_source import LambdaContextStub
from apilake_dev.vendors.fake import Fault
from tests.conftest import load_event
from tests.integration.conftest import DATASETS, MAX_RECEIVE_COUNT, READ_TIMEOUT, RETRIES, Harness

RUN = "sched-20261126T010000Z"
INGESTION = date(2026, 11, 26)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.throttle(retry_after=1),
        Fault.throttle(retry_after=1, http_date=True),
        Fault.throttle(),
        Fault("status", status=503),
        Fault("status", status=500, retry_after="1"),
        Fault("slow", delay_seconds=READ_TIMEOUT + 1.5),
        Fault("truncated"),
        Fault("reset"),
    ],
    ids=[
        "429 Retry-After seconds",
        "429 Retry-After HTTP-date",
        "429 bare",
        "503",
        "500 Retry-After",
        "slow",
        "truncated",
        "reset",
    ],
)
def test_transient_faults_are_retried_and_the_page_lands_once(harness: Harness, fault: Fault) -> None:
    # Given page 3 of the offset source fails once with the fault
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("offset", "ds-f", 3, fault)
    retries_before = totals.get("offsets", Metric.RETRIES)
    # When the queue drains
    stats = harness.drain("offsets")
    # Then the page was retried inside the invocation and landed; nothing failed, nothing is missing
    assert stats.failed == 0
    assert harness.vendor.requests_for("offset", "ds-f", 3) == 2
    assert totals.get("offsets", Metric.RETRIES) - retries_before == 1
    assert harness.records("offsets") == DATASETS["offsets"].records(None, None)
    assert harness.status(RUN).sources[5].complete


def test_throttling_on_a_chain_page_is_retried_without_breaking_the_chain(harness: Harness) -> None:
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("cursor", "ds-b", 3, Fault.throttle(retry_after=1), Fault("status", status=502))
    throttled_before = totals.get("api-b", Metric.THROTTLED)
    harness.drain("api-b")
    assert harness.records("api-b") == DATASETS["api-b"].records(None, None)
    assert totals.get("api-b", Metric.THROTTLED) - throttled_before == 1


def test_a_malformed_body_fails_that_page_only_it_reaches_the_dlq_and_status_names_it(harness: Harness) -> None:
    # Given page 7 of the offset source always answers a malformed body
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("offset", "ds-f", 7, Fault("malformed"), forever=True)
    # When the queue drains
    harness.drain("offsets")
    # Then the nine other pages landed, the page's message is in the DLQ after maxReceiveCount attempts
    assert len(harness.keys("offsets")) == 9
    assert page_key("offsets", INGESTION, "all", 7) not in harness.keys("offsets")
    assert [json.loads(b)["page"] for b in harness.dlq_bodies("offsets")] == [7]
    assert harness.vendor.requests_for("offset", "ds-f", 7) == MAX_RECEIVE_COUNT
    # And the ledger names the missing page
    offsets = next(s for s in harness.status(RUN).sources if s.source == "offsets")
    assert not offsets.complete and offsets.shards[0].missing == [7]
    assert offsets.shards[0].failures[7].startswith("BadResponseError: the response of")
    assert offsets.shards[0].failures[7].endswith(f"(attempt {MAX_RECEIVE_COUNT})")


def test_a_chain_that_breaks_is_reported_as_not_ended(harness: Harness) -> None:
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("next_url", "ds-c", 2, Fault("status", status=404), forever=True)
    harness.drain("api-c")
    api_c = next(s for s in harness.status(RUN).sources if s.source == "api-c")
    assert not api_c.complete
    assert (
        api_c.shards[0].landed_pages == 1 and api_c.shards[0].note == "chain not ended: no page after 1 has landed yet"
    )


def queue_counts(harness: Harness, source: str) -> dict[str, int]:
    """The queue's approximate counts: visible, not visible (in flight), delayed."""
    attributes = harness.sqs.get_queue_attributes(QueueUrl=harness.queues[source], AttributeNames=["All"])["Attributes"]
    return {
        name.removeprefix("ApproximateNumberOfMessages") or "Visible": int(value)
        for name, value in attributes.items()
        if name.startswith("ApproximateNumberOfMessages")
    }


def test_a_long_retry_after_parks_a_delayed_copy_of_the_message(harness: Harness) -> None:
    # Given the only page of a source answers 429 with Retry-After: 600 (longer than we sleep inline)
    harness.send(
        "one-page", {"run_id": "r1", "source": "one-page", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}
    )
    harness.vendor.inject("single", "ds-g", 1, Fault.throttle(retry_after=600))
    source = harness.event_source("one-page")
    parked_before = totals.get("one-page", Metric.PARKED)
    # When the worker gets it
    assert source.poll_once() == 1
    # Then the delivery succeeded without a retry inside Lambda and was deleted; a copy waits, delayed
    assert (source.stats.deleted, source.stats.failed) == (1, 0)
    assert harness.vendor.requests_for("single", "ds-g", 1) == 1
    assert queue_counts(harness, "one-page") == {"Visible": 0, "NotVisible": 0, "Delayed": 1}
    assert source.poll_once() == 0
    assert totals.get("one-page", Metric.PARKED) - parked_before == 1
    # And once the wait is over (the message sent again by hand here) the page lands
    harness.sqs.purge_queue(QueueUrl=harness.queues["one-page"])
    harness.send(
        "one-page", {"run_id": "r1", "source": "one-page", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}
    )
    source.drain()
    assert harness.records("one-page") == DATASETS["one-page"].records(None, None)


def test_nine_parks_in_a_row_keep_the_receive_count_at_one_and_the_page_lands(harness: Harness) -> None:
    # Given the one-page source parks any Retry-After (no inline wait, so that one-second waits park
    # and the test is quick), and its page answers 429 with Retry-After: 1 nine times, then the page
    config = yaml.safe_load(harness.sources_path.read_text())
    for source_config in config["sources"]:
        if source_config["name"] == "one-page":
            source_config["retries"] = {**RETRIES, "max_inline_wait_seconds": 0}
    harness.sources_path.write_text(yaml.safe_dump(config, sort_keys=False))
    harness.vendor.inject("single", "ds-g", 1, *[Fault.throttle(retry_after=1)] * 9)
    harness.send(
        "one-page", {"run_id": "r1", "source": "one-page", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}
    )
    source = harness.event_source("one-page")
    receive_counts: list[int] = []
    worker = source.handler

    def counting_receives(event: dict[str, Any], context: Any) -> Any:
        receive_counts.extend(int(record["attributes"]["ApproximateReceiveCount"]) for record in event["Records"])
        return worker(event, context)

    source.handler = counting_receives
    parked_before = totals.get("one-page", Metric.PARKED)
    # When the worker polls until the page lands (a delayed message is neither visible nor in flight,
    # so the queue is polled here rather than drained)
    give_up = time.monotonic() + 30
    while not harness.keys("one-page") and time.monotonic() < give_up:
        if source.poll_once() == 0:
            time.sleep(0.1)
    # Then the page landed on the tenth request, and every delivery succeeded: each message was
    # deleted on its first receive, none came back, none reached the DLQ (maxReceiveCount is 3)
    assert harness.records("one-page") == DATASETS["one-page"].records(None, None)
    assert harness.vendor.requests_for("single", "ds-g", 1) == 10
    assert receive_counts == [1] * 10
    assert (source.stats.received, source.stats.deleted, source.stats.failed) == (10, 10, 0)
    assert totals.get("one-page", Metric.PARKED) - parked_before == 9
    assert not harness.dlq_bodies("one-page")
    assert queue_counts(harness, "one-page") == {"Visible": 0, "NotVisible": 0, "Delayed": 0}


def test_the_worker_event_fixture_lands_its_page(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the SQS event `sam local invoke -e events/worker.json` sends (api-a, shard 2026-11-25, page 1)
    event = load_event("worker.json")
    monkeypatch.setenv("APILAKE_SOURCE", "api-a")
    monkeypatch.setenv("APILAKE_LAKE_BUCKET", "apilake-test-lake")
    monkeypatch.setenv("APILAKE_QUEUE_URL", harness.queues["api-a"])
    monkeypatch.setenv("APILAKE_SOURCES_FILE", str(harness.sources_path))
    # When the worker handler is invoked with it
    result = harness.worker.handler(event, LambdaContextStub("worker-api-a", 60))
    # Then no record failed and the page holds the vendor's first 7 records of that day
    assert result == {"batchItemFailures": []}
    assert harness.keys("api-a") == [page_key("api-a", INGESTION, "2026-11-25", 1)]
    assert harness.records("api-a") == DATASETS["api-a"].records("2026-11-25", "2026-11-26")[:7]


def test_the_backfill_event_plans_one_shard_per_day_of_its_window(harness: Harness) -> None:
    summary = harness.plan(load_event("planner-backfill.json"))
    assert summary["run_id"] == "backfill-2026-11-w1" and list(summary["messages"]) == ["api-a"]
    status = harness.status("backfill-2026-11-w1")
    assert [s.shard for s in status.sources[0].shards] == [f"2026-11-0{d}" for d in range(1, 8)]
    # the fake vendor has no api-a records in early November: seven shards of zero pages, complete
    assert status.complete and all(s.expected_pages == 0 for s in status.sources[0].shards)


def test_pages_whose_ledger_record_fails_come_back_and_are_recorded(harness: Harness) -> None:
    # Given the offset source planned, and the first write of a ledger record of landed pages failing
    harness.plan(load_event("planner.json"))
    refused: list[str] = []

    def fail_first_record(params: dict[str, Any], **_: Any) -> None:
        if "/landed=" in params["Key"] and not refused:
            refused.append(params["Key"])
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")

    s3 = default_clients().s3
    s3.meta.events.register("provide-client-params.s3.PutObject", fail_first_record)
    try:
        # When the queue drains
        stats = harness.drain("offsets")
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", fail_first_record)
    # Then the pages of that batch were reported failed, came back, landed unchanged and were recorded
    first_batch = len(refused[0].split("landed=")[1].split("_"))
    assert first_batch >= 1 and stats.failed == first_batch
    assert stats.deleted == 10 and not harness.dlq_bodies("offsets")
    assert harness.records("offsets") == DATASETS["offsets"].records(None, None)
    offsets = next(s for s in harness.status(RUN).sources if s.source == "offsets")
    assert offsets.complete and offsets.shards[0].landed_pages == 10
