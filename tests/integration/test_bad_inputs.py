"""Bad input of every kind gets a clear error, fails alone, and loses nothing else."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3
import pytest
import yaml

from apilake.exceptions import PlanningError
from apilake.ledger import shard_prefix
from apilake.observability import Metric, totals
from apilake.records import MAX_DEPTH
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault
from tests.conftest import load_event
from tests.integration.conftest import API_KEY, BUCKET, READ_TIMEOUT, RETRIES, Harness

GOOD = {"run_id": "r1", "source": "offsets", "ingestion_date": "2026-11-26", "shard": "all", "page": 1}
RUN = "sched-20261126T010000Z"  # the run of events/planner.json


def failure_note(harness: Harness, source: str, page: int, run_id: str = RUN) -> dict[str, Any]:
    """The ledger's note of a page's last failure (what `apilake status` shows while the page is missing)."""
    key = f"{shard_prefix(source, run_id, 'all')}failed={page:05d}.json"
    note: dict[str, Any] = json.loads(harness.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return note


def set_secret(value: str) -> None:
    boto3.client("secretsmanager", region_name="us-east-1").put_secret_value(
        SecretId="apilake/vendor", SecretString=value
    )


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
        (Fault("deep_json"), f"is JSON nested deeper than {MAX_DEPTH} levels"),
        (Fault("encodings"), "could not be decoded (Content-Encoding 'gzip, gzip, gzip, gzip, gzip, gzip'"),
    ],
    ids=[
        "redirect to another host",
        "HTML instead of JSON",
        "malformed JSON",
        "404",
        "nested 200,000 deep",
        "encodings",
    ],
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


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " \n"], ids=["\\n", "\\r\\n", "blank and \\n"])
def test_a_secret_stored_with_a_trailing_newline_works_and_never_shows(
    harness: Harness, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    # Given the key stored from a file (``--secret-string file://key.txt`` keeps its last newline)
    set_secret(API_KEY + suffix)
    # When the planner probes with it (offsets, the key in a header) and workers fetch with it (api-c: in the query)
    harness.plan(load_event("planner.json"))
    harness.drain("offsets")
    harness.drain("api-c")
    # Then the pages landed, and the key shows nowhere
    sources = {s.source: s for s in harness.status(RUN).sources}
    assert sources["offsets"].complete and sources["api-c"].complete
    logs, printed = log_lines.getvalue(), capsys.readouterr()
    assert API_KEY not in logs + printed.out + printed.err


def test_a_secret_with_a_control_character_fails_its_sources_without_showing_it(
    harness: Harness, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a key with a newline inside (which http.client and requests refuse, quoting the header value)
    first, second = API_KEY[:8], API_KEY[8:]
    set_secret(f"{first}\n{second}")
    # When the planner probes with it: those sources are not planned, and its error says why, not what
    with pytest.raises(PlanningError) as raised:
        harness.plan(load_event("planner.json"))
    assert "secret 'apilake/vendor' has a control character in its value" in str(raised.value)
    # And a worker fetching with it (api-b, a chain: planned without a probe) fails the page permanently
    harness.drain("api-b")
    api_b = next(s for s in harness.status(RUN).sources if s.source == "api-b")
    assert (
        "CredentialsError: source 'api-b': secret 'apilake/vendor' has a control character"
        in api_b.shards[0].failures[1]
    )
    assert [json.loads(b)["page"] for b in harness.dlq_bodies("api-b")] == [1]
    # And no part of the key shows anywhere
    logs, printed = log_lines.getvalue(), capsys.readouterr()
    for part in (first, second):
        assert part not in str(raised.value) + logs + printed.out + printed.err


@pytest.mark.parametrize(
    ("source", "cursor"),
    [
        ("api-c", "{thief}/next_url/ds-c?per_page=10&page=2"),
        ("api-d", "{thief}/link_header/ds-d?per_page=10&page=2"),
        ("api-d", "{thief}\\@{vendor_host}/link_header/ds-d?page=2"),
    ],
    ids=["next URL", "Link header", "a host only requests reads"],
)
def test_a_queued_cursor_on_another_host_never_gets_the_credentials(
    harness: Harness, log_lines: io.StringIO, source: str, cursor: str
) -> None:
    with FakeVendor([Dataset("ds-c", total=30), Dataset("ds-d", total=21)]) as thief:
        # Given a queued message (or an edited DLQ message, redriven) whose URL cursor points to another host
        url = cursor.format(thief=thief.base_url, vendor_host=harness.vendor.base_url.split("//")[1])
        item = {"run_id": "r1", "source": source, "ingestion_date": "2026-11-26", "shard": "all", "page": 2}
        harness.send(source, {**item, "cursor": url})
        # When the queue drains
        harness.drain(source)
        # Then that host was never called, and the page failed permanently, naming the source and the host
        assert thief.state.seen_urls == []
        reason = failure_note(harness, source, 2, "r1")["reason"]
        assert f"source '{source}' may only call {harness.vendor.base_url}: refused to send a request to " in reason
        assert reason.endswith(thief.base_url)
        assert harness.dlq_bodies(source) == [json.dumps({**item, "cursor": url})]
    assert API_KEY not in log_lines.getvalue()


def test_a_retry_after_of_400_digits_parks_the_page_for_the_longest_sqs_allows(harness: Harness) -> None:
    # Given a vendor asking to wait 10^400 seconds for page 4
    harness.plan(load_event("planner.json"))
    harness.vendor.inject("offset", "ds-f", 4, Fault("429", status=429, retry_after="9" * 400), forever=True)
    parked = totals.get("offsets", Metric.PARKED)
    # When a worker takes the pages once
    harness.event_source("offsets").poll_once()
    # Then page 4 is parked for 12 hours (SQS's longest visibility timeout), the reason noted and counted
    note = failure_note(harness, "offsets", 4)
    assert note["error"] == "ParkMessageError"
    assert "429 from" in note["reason"] and "with Retry-After 43200s: parking the message" in note["reason"]
    assert totals.get("offsets", Metric.PARKED) > parked


def test_a_body_sent_a_byte_at_a_time_is_cut_off_and_retried(harness: Harness, log_lines: io.StringIO) -> None:
    # Given page 4 sent a byte every 50 ms (each read within the read timeout, the whole in minutes),
    # for every attempt of its first delivery
    harness.plan(load_event("planner.json"))
    drips = (Fault("drip", delay_seconds=0.05) for _ in range(int(RETRIES["max_attempts"])))
    harness.vendor.inject("offset", "ds-f", 4, *drips)
    failures = totals.get("offsets", Metric.FAILURES)
    started = time.monotonic()
    # When the queue drains
    harness.drain("offsets")
    # Then each attempt was cut off at the read timeout, the delivery failed as retryable with that reason,
    # and the next delivery landed the page
    assert time.monotonic() - started < 30
    note = failure_note(harness, "offsets", 4)
    assert note["error"] == "TransientHttpError"
    assert f"took longer than {READ_TIMEOUT:g}s, the limit for a whole response" in note["reason"]
    assert totals.get("offsets", Metric.FAILURES) == failures + 1
    assert next(s for s in harness.status(RUN).sources if s.source == "offsets").complete
