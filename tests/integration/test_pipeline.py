"""The whole scheduled flow in-process: planner -> SQS (moto) -> worker -> S3 (moto), against a real
HTTP vendor on 127.0.0.1 serving every pagination style."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest

from apilake.lake import page_key
from apilake_dev.vendors.fake import Dataset
from tests.conftest import load_event
from tests.integration.conftest import DATASETS, Harness

RUN = "sched-20261126T010000Z"
INGESTION = date(2026, 11, 26)

# source -> (pagination style, pages per shard as the vendor serves them)
EXPECTED_PAGES = {
    "api-a": ("page_number, total known, daily shards", {"2026-11-23": 3, "2026-11-24": 3, "2026-11-25": 3}),
    "api-b": ("cursor in the body with has_more", {"all": 5}),
    "api-c": ("next URL in the body", {"all": 3}),
    "api-d": ("Link rel=next header", {"all": 3}),
    "open-pages": ("page_number, no total, stops on a short page", {"all": 6}),
    "offsets": ("offset + limit with a total", {"all": 10}),
    "one-page": ("single page", {"all": 1}),
}


def expected_records(source: str) -> list[dict[str, object]]:
    dataset: Dataset = DATASETS[source]
    if source == "api-a":  # daily shards: each shard's window, shards in key order
        return [r for day in ("2026-11-23", "2026-11-24", "2026-11-25") for r in dataset.records(day, _next_day(day))]
    return dataset.records(None, None)


def _next_day(day: str) -> str:
    return date.fromordinal(date.fromisoformat(day).toordinal() + 1).isoformat()


@pytest.mark.parametrize("source", list(EXPECTED_PAGES), ids=[f"{s}: {v[0]}" for s, v in EXPECTED_PAGES.items()])
def test_every_page_lands_once_with_exactly_the_vendors_records(harness: Harness, source: str) -> None:
    # Given the nightly schedule's event
    summary = harness.plan(load_event("planner.json"))
    assert summary["run_id"] == RUN and summary["errors"] == {}
    # When the source's queue is drained through the worker
    stats = harness.drain(source)
    # Then every expected page object exists once, with exactly the vendor's records, in order
    _, shards = EXPECTED_PAGES[source]
    assert harness.keys(source) == sorted(
        page_key(source, INGESTION, shard, page) for shard, pages in shards.items() for page in range(1, pages + 1)
    )
    assert harness.records(source) == expected_records(source)
    # And nothing failed, nothing is left, the ledger says the source is complete
    assert stats.failed == 0 and stats.handler_errors == []
    assert harness.dlq_bodies(source) == []
    status = {s.source: s for s in harness.status(RUN).sources}[source]
    assert status.complete, status


def test_the_whole_run_is_complete_and_the_secret_is_nowhere(
    harness: Harness, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.plan(load_event("planner.json"))
    for source in DATASETS:
        harness.drain(source)
    assert harness.status(RUN).complete
    # The API key went out in a header for most sources and in the query string for api-c: it must not
    # appear in any log line, queue message, ledger entry or object metadata.
    printed = capsys.readouterr()
    assert "page landed" in log_lines.getvalue()
    assert "k3y-d0-not-l0g" not in log_lines.getvalue() + printed.out + printed.err
    for page in harness.s3.get_paginator("list_objects_v2").paginate(Bucket="apilake-test-lake"):
        for obj in page.get("Contents", []):
            stored = harness.s3.get_object(Bucket="apilake-test-lake", Key=obj["Key"])
            assert "k3y-d0-not-l0g" not in json.dumps(stored["Metadata"])
            if obj["Key"].startswith("ledger/"):
                assert "k3y-d0-not-l0g" not in stored["Body"].read().decode()


def test_a_redelivered_message_leaves_the_object_untouched(harness: Harness) -> None:
    # Given a landed run
    harness.plan(load_event("planner.json"))
    harness.drain("offsets")
    key = page_key("offsets", INGESTION, "all", 4)
    before = harness.s3.head_object(Bucket="apilake-test-lake", Key=key)
    # When page 4's message is delivered again
    harness.send(
        "offsets", {"run_id": RUN, "source": "offsets", "ingestion_date": "2026-11-26", "shard": "all", "page": 4}
    )
    stats = harness.drain("offsets")
    # Then it succeeded without rewriting: same ETag, same LastModified
    after = harness.s3.head_object(Bucket="apilake-test-lake", Key=key)
    assert stats.failed == 0
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert harness.vendor.requests_for("offset", "ds-f", 4) == 2


@pytest.mark.parametrize(
    ("source", "style", "dataset"),
    [
        ("api-b", "cursor", "ds-b"),
        ("api-c", "next_url", "ds-c"),
        ("api-d", "link_header", "ds-d"),
        ("open-pages", "page_number", "ds-e"),
    ],
)
def test_a_redelivered_chain_message_does_not_fork_the_chain(
    harness: Harness, source: str, style: str, dataset: str
) -> None:
    # Given a chain's first message delivered twice before anything runs (SQS at-least-once)
    harness.plan(load_event("planner.json"))
    harness.send(source, {"run_id": RUN, "source": source, "ingestion_date": "2026-11-26", "shard": "all", "page": 1})
    # When the queue is drained, and page 1 is delivered once more afterwards
    harness.drain(source)
    harness.send(source, {"run_id": RUN, "source": source, "ingestion_date": "2026-11-26", "shard": "all", "page": 1})
    stats = harness.drain(source)
    # Then every later page was fetched exactly once: page 2 was enqueued once, so the chain never forked
    _, shards = EXPECTED_PAGES[source]
    for page in range(2, shards["all"] + 1):
        assert harness.vendor.requests_for(style, dataset, page) == 1, f"page {page}"
    assert harness.vendor.requests_for(style, dataset, 1) == 3
    assert stats.failed == 0
    assert harness.records(source) == expected_records(source)
    assert harness.status(RUN).sources[[s.source for s in harness.status(RUN).sources].index(source)].complete


def test_one_bad_message_in_a_batch_of_ten_fails_alone(harness: Harness) -> None:
    # Given nine good messages and one whose body is not JSON, received as one batch
    for page in range(1, 10):
        harness.send(
            "offsets",
            {"run_id": "r9", "source": "offsets", "ingestion_date": "2026-11-26", "shard": "all", "page": page},
        )
    harness.send("offsets", "this is not json")
    # When the queue is drained (the bad one is received maxReceiveCount times, then moved)
    stats = harness.drain("offsets")
    # Then the nine pages landed, and only the bad message failed, ending in the DLQ
    assert len(harness.keys("offsets")) == 9
    assert stats.batches >= 1 and stats.received >= 10
    assert stats.deleted == 9
    assert harness.dlq_bodies("offsets") == ["this is not json"]


@pytest.mark.parametrize(
    "body",
    [
        {
            "run_id": "r",
            "source": "offsets",
            "ingestion_date": "2026-11-26",
            "shard": "all",
            "page": 1,
            "schema_version": 9,
        },
        {"run_id": "r", "source": "offsets", "ingestion_date": "2026-11-26", "shard": "../../etc", "page": 1},
        {"run_id": "r", "source": "api-b", "ingestion_date": "2026-11-26", "shard": "all", "page": 1},
        {"run_id": "r", "source": "offsets", "ingestion_date": "2026-11-26", "shard": "all", "page": -1},
    ],
    ids=["wrong schema version", "path in shard", "another source's message", "negative page"],
)
def test_messages_that_cannot_be_processed_reach_the_dlq(harness: Harness, body: dict[str, object]) -> None:
    harness.send("offsets", body)
    harness.drain("offsets")
    assert [json.loads(b) for b in harness.dlq_bodies("offsets")] == [body]
    assert harness.keys("offsets") == []
