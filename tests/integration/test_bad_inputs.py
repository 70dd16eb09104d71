"""Bad input of every kind gets a clear error, fails alone, and loses nothing else."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from apilake_dev.vendors.fake import Fault
from tests.conftest import load_event
from tests.integration.conftest import API_KEY, Harness

GOOD = {"run_id": "r1", "source": "offsets", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}


@pytest.mark.parametrize(
    "body",
    [
        "this is not json",
        json.dumps({**GOOD, "schema_version": 2}),
        json.dumps({**GOOD, "source": "api-z"}),
        json.dumps({**GOOD, "page": -1}),
        json.dumps({**GOOD, "shard": "../all"}),
        json.dumps({**GOOD, "shard": "all/../../x"}),
        json.dumps({**GOOD, "run_id": "r1%2F..%2Fx"}),
        json.dumps({**GOOD, "run_id": "r/1"}),
        json.dumps({**GOOD, "cursor": "c" * 5000}),
        json.dumps([GOOD]),
    ],
    ids=[
        "not JSON",
        "wrong schema version",
        "unknown source",
        "negative page",
        "../ in shard",
        "/ in shard",
        "%2F in run id",
        "/ in run id",
        "oversized cursor",
        "not an object",
    ],
)
def test_a_message_that_cannot_be_processed_fails_alone_and_reaches_the_dlq(harness: Harness, body: str) -> None:
    # Given the bad message between two good ones
    harness.send("offsets", GOOD)
    harness.send("offsets", body)
    harness.send("offsets", {**GOOD, "page": 2})
    # When the queue drains
    harness.drain("offsets")
    # Then the good pages landed, the bad message is in the DLQ, and no object was written for it
    assert [k.rsplit("/", 1)[1] for k in harness.keys("offsets")] == ["page=00001.json.gz", "page=00002.json.gz"]
    assert harness.dlq_bodies("offsets") == [body]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            Fault("redirect", status=302, location="http://example.invalid/steal"),
            "redirect (302) to http://example.invalid refused",
        ),
        (Fault("html"), "is not JSON (text/html"),
        (Fault("malformed"), "is not JSON (application/json"),
        (Fault("status", status=404), "404 from"),
    ],
    ids=["redirect to another host", "HTML instead of JSON", "malformed JSON", "404"],
)
def test_a_bad_vendor_answer_fails_that_page_with_its_reason(harness: Harness, fault: Fault, reason: str) -> None:
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("offset", "ds-f", 4, fault, forever=True)
    harness.drain("offsets")
    offsets = next(s for s in harness.status("sched-20261126T010000Z").sources if s.source == "offsets")
    assert offsets.shards[0].missing == [4]
    assert reason in offsets.shards[0].failures[4]
    assert [json.loads(b)["page"] for b in harness.dlq_bodies("offsets")] == [4]
    assert harness.vendor.requests_for("offset", "ds-f", 4) == 3  # once per delivery: never retried inside


def test_a_page_over_the_size_limit_is_refused_without_reading_it_all(harness: Harness) -> None:
    # Given a source whose pages may be at most 1 KiB (the default is 64 MiB)
    document = yaml.safe_load(harness.sources_path.read_text())
    next(s for s in document["sources"] if s["name"] == "offsets")["max_page_bytes"] = 1024
    harness.sources_path.write_text(yaml.safe_dump(document))
    # When a page of ~5 KiB arrives
    harness.send("offsets", GOOD)
    harness.drain("offsets")
    # Then it fails permanently, naming the limit, and lands nowhere
    assert harness.keys("offsets") == []
    assert harness.dlq_bodies("offsets") == [json.dumps(GOOD)]


def test_the_secret_appears_in_no_log_line_even_in_tracebacks(
    harness: Harness, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given api-c (its key in the query string) failing in every way on its pages
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("next_url", "ds-c", 1, Fault("reset"), Fault("truncated"), Fault("status", status=503))
    harness.vendor.inject("next_url", "ds-c", 2, Fault("status", status=404), forever=True)
    # When the queue drains (retries, a permanent failure, its traceback logged by the batch processor)
    harness.drain("api-c")
    logs, printed = log_lines.getvalue(), capsys.readouterr()
    # Then the key is in no line (logs, metrics, anything printed), while the redacted URL is there
    assert "Traceback" in logs and "PermanentHttpError: 404 from" in logs
    assert API_KEY not in logs + printed.out + printed.err
    assert "api_key=***" in logs
    # And not in the queue's messages either
    assert all(API_KEY not in body for body in harness.dlq_bodies("api-c"))
