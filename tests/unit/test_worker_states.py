"""The worker's state machine as a unit: one SQS batch through PageIngester, every collaborator a fake.

fetch page -> write it to the lake -> continue its chain once (or mark its end) -> record the batch
in the ledger; and the ways out: circuit breaker, parking, a claim in flight, a failed send, a
ledger that cannot be written.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from apilake.exceptions import BadResponseError, ParkMessageError, TransientHttpError
from apilake.ingest import CIRCUIT_THRESHOLD, MAX_PARKED_SECONDS, request_fingerprint
from apilake.lake import encode_page
from apilake.messages import Parking
from apilake.observability import Metric, totals
from apilake.pagination import PageRequest
from tests.unit.fakes import (
    NOW,
    QUEUE_URL,
    RUN,
    STALE_SECONDS,
    StoredClaim,
    Worker,
    claim_key,
    client_error,
    document,
    item,
    key,
)

# -- happy paths -------------------------------------------------------------------------------


def test_a_fan_out_page_lands_and_is_recorded_with_nothing_to_continue() -> None:
    # Given page 2 of a fan-out source
    worker = Worker("fan")
    worker.vendor.answer("page=2", document(2))
    page = item("fan", 2)
    # When it is delivered
    failed = worker.run(page)
    # Then it landed under its key with the vendor's records and what was asked
    assert failed == []
    stored = worker.lake.objects[key(page)]
    assert stored.records == [{"id": 20}, {"id": 21}]
    assert stored.metadata == {
        "fetched-at": "2026-11-26T01:00:00+00:00",
        "request-fingerprint": request_fingerprint(PageRequest("https://api.example.com/items", {"page": "2"})),
        "run-id": RUN,
    }
    # And the batch's one ledger marker holds it
    assert worker.ledger.landed == [
        [
            (
                page,
                {
                    "key": key(page),
                    "sha256": stored.sha256,
                    "records": 2,
                    "bytes": len(encode_page(stored.records)[1]),
                    "written": True,
                    "has_next": False,
                    "fetched_at": "2026-11-26T01:00:00+00:00",
                    "attempts": 1,
                    "throttled": 0,
                    "latency_ms": 0.0,
                    "parks": 0,
                },
            )
        ]
    ]
    # And a fan-out page neither continues nor ends a chain
    assert (worker.sender.sent, worker.ledger.claims, worker.ledger.ends) == ([], {}, [])


def test_a_chain_page_lands_and_its_next_page_is_claimed_and_sent_exactly_once() -> None:
    # Given a chain's page 1, whose response carries the cursor of page 2
    worker = Worker("chain")
    worker.vendor.answer("", document(1, next_cursor="c2"))
    first = item("chain", 1)
    # When it is delivered twice in one batch, and once more in a later one
    assert worker.run(first, first) == []
    assert worker.run(first) == []
    # Then page 2 was sent once, with the cursor, and its claim is confirmed
    assert worker.sender.sent == [(QUEUE_URL, item("chain", 2, cursor="c2"))]
    assert worker.ledger.claims == {claim_key(item("chain", 2)): StoredClaim("sent", NOW)}
    assert worker.ledger.cursors == {("chain", RUN, "all", "c2"): 2}
    # And the page was written once, recorded with each batch, and the chain is not ended
    assert worker.lake.puts == 1
    assert worker.ledger.landed_pages() == [1, 1, 1]
    assert worker.ledger.ends == []


def test_the_last_page_of_a_chain_marks_its_end_and_sends_nothing() -> None:
    # Given page 3 of a chain, whose response has no cursor
    worker = Worker("chain")
    worker.vendor.answer("cursor=c3", document(3, next_cursor=None))
    last = item("chain", 3, cursor="c3")
    # When it is delivered
    failed = worker.run(last)
    # Then it landed, the chain's end is marked, and nothing was claimed or sent
    assert failed == []
    assert key(last) in worker.lake.objects
    assert worker.ledger.ends == [last]
    assert (worker.sender.sent, worker.ledger.claims) == ([], {})
    assert worker.ledger.landed[0][0][1]["has_next"] is False


def test_a_redelivered_chain_page_whose_next_page_was_sent_lands_unchanged_and_sends_nothing() -> None:
    # Given page 1 of a chain landed and page 2 sent
    worker = Worker("chain")
    worker.vendor.answer("", document(1, next_cursor="c2"))
    first = item("chain", 1)
    worker.run(first)
    sent_before = list(worker.sender.sent)
    # When page 1's message is delivered again, an hour later
    worker.clock.advance(3600)
    failed = worker.run(first)
    # Then it succeeds, the page is not rewritten, and page 2 is not sent again
    assert failed == []
    assert worker.lake.puts == 1
    assert worker.ledger.landed[-1][0][1]["written"] is False
    assert worker.sender.sent == sent_before
    assert worker.ledger.claims[claim_key(item("chain", 2))] == StoredClaim("sent", NOW)


# -- continuation claims -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim_before", "sends", "failed", "claim_after"),
    [
        pytest.param(None, 1, [], "sent", id="unclaimed: claimed, sent, confirmed"),
        pytest.param(("sent", 10), 0, [], "sent", id="sent: nothing to do"),
        pytest.param(("pending", 10), 0, [1], "pending", id="pending and fresh: in flight, the record fails"),
        pytest.param(("pending", STALE_SECONDS - 1), 0, [1], "pending", id="pending, a second short of stale"),
        pytest.param(("pending", STALE_SECONDS), 1, [], "sent", id="pending as long as the worker timeout: sent"),
        pytest.param(("pending", 3600), 1, [], "sent", id="pending an hour: its worker died, sent again"),
    ],
)
def test_the_next_page_is_sent_only_when_no_other_delivery_holds_a_live_claim(
    claim_before: tuple[str, float] | None, sends: int, failed: list[int], claim_after: str
) -> None:
    # Given page 1 of a chain, and page 2's claim in the given state, made that many seconds ago
    worker = Worker("chain")
    worker.vendor.answer("", document(1, next_cursor="c2"))
    if claim_before is not None:
        state, age = claim_before
        worker.clock.advance(-age)
        worker.ledger.claims[claim_key(item("chain", 2))] = StoredClaim(state, worker.clock())
        worker.clock.advance(age)
    # When page 1 is delivered
    result = worker.run(item("chain", 1))
    # Then page 2 was sent as many times as expected, and its claim ends in the expected state
    assert result == failed
    assert len(worker.sender.sent) == sends
    assert worker.ledger.claims[claim_key(item("chain", 2))].state == claim_after
    # And page 1 landed either way; a failed record is noted in the ledger, not recorded as landed
    assert key(item("chain", 1)) in worker.lake.objects
    assert worker.ledger.landed_pages() == ([] if failed else [1])
    if failed:
        assert worker.ledger.failures[1]["error"] == "ContinuationInFlightError"


@pytest.mark.parametrize(
    ("stale_claim", "claim_after"),
    [
        pytest.param(False, None, id="this delivery's own claim: released"),
        pytest.param(True, "pending", id="a stale claim taken over: left stale for the next delivery"),
    ],
)
def test_a_send_that_fails_fails_the_record_and_a_redelivery_sends_the_page_once(
    stale_claim: bool, claim_after: str | None
) -> None:
    # Given page 1 of a chain, the queue refusing messages, and page 2 unclaimed (or claimed by a dead worker)
    worker = Worker("chain")
    worker.vendor.answer("", document(1, next_cursor="c2"))
    worker.sender.broken = client_error("SendMessage")
    next_claim = claim_key(item("chain", 2))
    if stale_claim:
        worker.ledger.claims[next_claim] = StoredClaim("pending", NOW)
        worker.clock.advance(STALE_SECONDS + 1)
    # When page 1 is delivered
    failed = worker.run(item("chain", 1))
    # Then the record failed as retryable, and the claim is released (or left as it was)
    assert failed == [1]
    assert worker.ledger.failures[1]["error"] == "RetryableError"
    assert worker.ledger.failures[1]["reason"].startswith("could not enqueue page 2")
    stored = worker.ledger.claims.get(next_claim)
    assert (stored.state if stored else None) == claim_after
    # And when the queue is back and page 1 comes again, page 2 is sent once
    worker.sender.broken = None
    assert worker.run(item("chain", 1)) == []
    assert worker.sender.sent == [(QUEUE_URL, item("chain", 2, cursor="c2"))]


def test_a_cursor_the_vendor_gave_before_stops_the_chain_before_the_page_is_written() -> None:
    # Given a chain whose page 3 answers with the cursor page 1 gave (it leads back to page 2)
    worker = Worker("chain")
    worker.vendor.answer("", document(1, next_cursor="c2"))
    worker.vendor.answer("cursor=c2", document(2, next_cursor="c3"))
    worker.vendor.answer("cursor=c3", document(3, next_cursor="c2"))
    assert worker.run(item("chain", 1)) == []
    assert worker.run(item("chain", 2, cursor="c2")) == []
    # When page 3 is delivered
    failed = worker.run(item("chain", 3, cursor="c3"))
    # Then it fails permanently, unwritten, and no page 4 is claimed or sent
    assert failed == [3]
    assert worker.ledger.failures[3]["error"] == "BadResponseError"
    assert key(item("chain", 3)) not in worker.lake.objects
    assert [sent.page for _, sent in worker.sender.sent] == [2, 3]
    assert claim_key(item("chain", 4)) not in worker.ledger.claims


# -- failures ----------------------------------------------------------------------------------

TRANSIENT = TransientHttpError("503 from https://api.example.com/items", status=503)
PERMANENT = BadResponseError("the response is not JSON")


@pytest.mark.parametrize(
    ("outcomes", "fetched", "failed"),
    [
        pytest.param(
            ["503", "503", "503", "ok", "ok"],
            [1, 2, 3],
            [1, 2, 3, 4, 5],
            id="three retryable failures in a row: the vendor is not called again",
        ),
        pytest.param(
            ["503", "503", "ok", "503", "503"],
            [1, 2, 3, 4, 5],
            [1, 2, 4, 5],
            id="a page that lands closes the circuit again",
        ),
        pytest.param(
            ["bad", "bad", "bad", "ok", "ok"],
            [1, 2, 3, 4, 5],
            [1, 2, 3],
            id="permanent failures do not open it",
        ),
        pytest.param(
            ["s3", "503", "s3", "ok", "ok"],
            [1, 2, 3],
            [1, 2, 3, 4, 5],
            id="failed lake writes count as failures",
        ),
    ],
)
def test_the_circuit_breaker_stops_a_failing_sources_batch_early(
    outcomes: list[str], fetched: list[int], failed: list[int]
) -> None:
    # Given a batch of five fan-out pages, each answered (or written) as the table says
    assert CIRCUIT_THRESHOLD == 3
    worker = Worker("fan")
    pages = [item("fan", page) for page in range(1, 6)]
    for page, outcome in zip(pages, outcomes, strict=True):
        answer = {"503": TRANSIENT, "bad": PERMANENT}.get(outcome, document(page.page))
        worker.vendor.answer(f"page={page.page}", answer)
        if outcome == "s3":
            worker.lake.broken[key(page)] = client_error("PutObject")
    # When the batch is delivered
    result = worker.run(*pages)
    # Then the vendor was called only for the pages before the circuit opened, and those after it failed
    assert worker.vendor.asked == [f"page={page}" for page in fetched]
    assert result == failed
    assert worker.ledger.landed_pages() == sorted(set(range(1, 6)) - set(failed))
    for unfetched in set(range(1, 6)) - set(fetched):
        assert worker.ledger.failures[unfetched]["error"] == "CircuitOpenError"


def test_when_the_batch_cannot_be_recorded_its_landed_records_fail_and_are_recorded_on_redelivery() -> None:
    # Given three fan-out pages, the second failing at the vendor, and the ledger refusing the batch's marker
    worker = Worker("fan")
    for page in (1, 3):
        worker.vendor.answer(f"page={page}", document(page))
    worker.vendor.answer("page=2", TRANSIENT, document(2))
    worker.ledger.broken["mark_landed"] = client_error("PutObject")
    pages = [item("fan", page) for page in (1, 2, 3)]
    # When the batch is delivered
    failed = worker.run(*pages)
    # Then every record is reported failed, each once: the two that landed unrecorded too
    assert sorted(failed) == [1, 2, 3]
    assert sorted(worker.lake.objects) == [key(pages[0]), key(pages[2])]
    assert worker.ledger.landed == []
    # And when the ledger is back and the three come again, they land (1 and 3 unchanged) and are recorded
    del worker.ledger.broken["mark_landed"]
    assert worker.run(*pages) == []
    assert worker.ledger.landed_pages() == [1, 2, 3]
    assert worker.lake.puts == 3


def test_a_message_for_another_source_fails_permanently_without_calling_the_vendor() -> None:
    # Given the fan-out source's worker and a message of the chain source
    worker = Worker("fan")
    # When it is delivered
    failed = worker.run(item("chain", 1))
    # Then it failed as an invalid message, noted in the ledger, and nothing was fetched or written
    assert failed == [1]
    assert worker.ledger.failures[1]["error"] == "InvalidMessageError"
    assert (worker.vendor.asked, worker.lake.objects) == ([], {})


# -- parking: a long Retry-After re-sends the message with a delay, it never spends a receive ------


def test_nine_long_parks_in_a_row_spend_no_receive_and_the_page_lands_when_the_vendor_recovers() -> None:
    # Given a page whose vendor answers 429 with Retry-After: 600 nine times, then the page
    worker = Worker("fan")
    worker.vendor.answer("page=1", *[ParkMessageError("429 with Retry-After 600s", delay_seconds=600)] * 9, document(1))
    parked_before = totals.get("fan", Metric.PARKED)
    message = item("fan", 1)
    # When each park's copy is delivered once its delay is over
    for park in range(1, 10):
        # Then each delivery succeeds (SQS deletes it: no message comes back, no receive count grows)
        assert worker.run(message) == []
        # and a copy of the page was sent to the source's queue, delayed for the wait, its parks counted
        assert len(worker.sender.parked()) == park
        message, delay = worker.sender.parked()[-1]
        assert worker.sender.sent[-1][0] == QUEUE_URL and delay == 600
        assert message.park is not None
        assert (message.park.count, message.park.since) == (park, NOW)
        assert message.park.until == worker.clock() + timedelta(seconds=600)
        assert message.model_copy(update={"park": None}) == item("fan", 1)
        worker.clock.advance(delay)
    assert worker.run(message) == []
    # Then the page landed once, on the tenth call to the vendor, and is recorded
    assert worker.vendor.asked == ["page=1"] * 10
    assert list(worker.lake.objects) == [key(item("fan", 1))]
    assert worker.ledger.landed_pages() == [1]
    # And every park was counted and noted in the ledger as the reason the page was missing meanwhile
    assert totals.get("fan", Metric.PARKED) - parked_before == 9
    assert worker.ledger.failures[1]["error"] == "ParkMessageError"
    assert worker.sender.undelayed() == []


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        pytest.param(600, 600, id="the vendor's wait"),
        pytest.param(3600, 900, id="longer than SQS delays a message: the first 15 minutes"),
    ],
)
def test_a_long_retry_after_sends_a_delayed_copy_and_the_delivery_succeeds(retry_after: int, delay: int) -> None:
    # Given a page whose vendor asks for a wait longer than is worth sleeping in Lambda
    worker = Worker("fan")
    worker.vendor.answer("page=1", ParkMessageError("429 with Retry-After", delay_seconds=retry_after))
    parked_before, failures_before = totals.get("fan", Metric.PARKED), totals.get("fan", Metric.FAILURES)
    # When it is delivered
    failed = worker.run(item("fan", 1))
    # Then the delivery succeeded, and a copy waits in the queue, not before the vendor's time
    assert failed == []
    until = NOW + timedelta(seconds=retry_after)
    assert worker.sender.parked() == [(item("fan", 1).parked(until, NOW), delay)]
    assert worker.sender.parked()[0][0].park == Parking(count=1, since=NOW, until=until)
    assert totals.get("fan", Metric.PARKED) - parked_before == 1
    assert totals.get("fan", Metric.FAILURES) - failures_before == 0
    # And the ledger says why the page is missing; nothing landed
    assert worker.ledger.failures[1] == {
        "reason": f"429 with Retry-After; park 1 since {NOW.isoformat()}, next try at {until.isoformat()}",
        "error": "ParkMessageError",
        "attempt": 1,
        "at": NOW.isoformat(),
    }
    assert (worker.lake.objects, worker.ledger.landed) == ({}, [])


def test_a_wait_longer_than_sqs_delays_is_parked_again_on_arrival_without_calling_the_vendor() -> None:
    # Given a page whose vendor asks for 2,000 s, then answers
    worker = Worker("fan")
    worker.vendor.answer("page=1", ParkMessageError("429 with Retry-After", delay_seconds=2000), document(1))
    until = NOW + timedelta(seconds=2000)
    message = item("fan", 1)
    # When its copies are delivered as SQS delays them: 900 s, 900 s, then the 200 s left
    for hop, delay in enumerate([900, 900, 200], start=1):
        assert worker.run(message) == []
        message, sent_delay = worker.sender.parked()[-1]
        assert sent_delay == delay and message.park == Parking(count=hop, since=NOW, until=until)
        worker.clock.advance(delay)
        # Then the vendor was asked once, and the ledger noted the wait once, when the vendor asked for it
        assert worker.vendor.asked == ["page=1"]
        assert worker.ledger.failures[1]["at"] == NOW.isoformat()
    # And the copy that arrives at the vendor's time (half a second early, within the margin) lands the page
    worker.clock.advance(-0.5)
    assert worker.run(message) == []
    assert worker.vendor.asked == ["page=1", "page=1"]
    assert worker.ledger.landed_pages() == [1]


def test_the_pages_after_a_parked_one_in_its_batch_wait_with_it_without_calling_the_vendor() -> None:
    # Given a batch of three pages, the vendor asking for a long wait at the first
    worker = Worker("fan")
    worker.vendor.answer("page=1", ParkMessageError("429 with Retry-After", delay_seconds=600))
    # When it is delivered
    failed = worker.run(*[item("fan", page) for page in (1, 2, 3)])
    # Then the vendor was asked once, and all three were parked until its time; no delivery failed
    assert failed == []
    assert worker.vendor.asked == ["page=1"]
    until = NOW + timedelta(seconds=600)
    assert worker.sender.parked() == [(item("fan", page).parked(until, NOW), 600) for page in (1, 2, 3)]
    assert worker.ledger.failures[3]["reason"].startswith("the vendor asked this batch to wait; park 1 since")


def test_a_delivery_redelivered_after_its_copy_was_sent_lands_the_page_once_and_continues_the_chain_once() -> None:
    # Given page 3 of a chain, whose vendor asks for a wait three times, then answers with page 4's cursor
    worker = Worker("chain")
    throttled = ParkMessageError("429 with Retry-After", delay_seconds=600)
    worker.vendor.answer("cursor=c3", throttled, throttled, throttled, document(3, next_cursor="c4"))
    original = item("chain", 3, cursor="c3")
    # When its first delivery parks a copy, and the worker dies before SQS deletes that delivery
    assert worker.run(original) == []
    copy = worker.sender.parked()[-1][0]
    # And the copy, parked again, and the original, back after the visibility timeout, are delivered
    worker.clock.advance(600)
    assert worker.run(copy) == []
    copy = worker.sender.parked()[-1][0]
    worker.clock.advance(1200)
    assert worker.run(original) == []  # the vendor still waits: a second copy, the one extra per crash
    second_copy = worker.sender.parked()[-1][0]
    assert worker.run(copy) == []  # its wait over: the page lands, page 4 is claimed and sent
    worker.clock.advance(600)
    assert worker.run(second_copy) == []  # lands unchanged, page 4 already sent
    # Then two copies were in the queue at once, each carrying the cursor and counting its own parks
    assert [(sent.cursor, sent.park.count if sent.park else 0) for sent, _ in worker.sender.parked()] == [
        ("c3", 1),
        ("c3", 2),
        ("c3", 1),
    ]
    # And the page was written once, recorded by both, and page 4 was sent once: the chain did not fork
    assert worker.lake.puts == 1
    assert worker.ledger.landed_pages() == [3, 3]
    assert worker.sender.undelayed() == [(QUEUE_URL, item("chain", 4, cursor="c4"))]
    assert worker.ledger.claims[claim_key(item("chain", 4))].state == "sent"


def test_a_park_the_queue_refuses_fails_the_record_and_notes_why() -> None:
    # Given a page whose vendor asks for a long wait, and the queue refusing the delayed copy
    worker = Worker("fan")
    worker.vendor.answer("page=1", ParkMessageError("429 with Retry-After", delay_seconds=600))
    worker.sender.broken = client_error("SendMessage")
    parked_before, failures_before = totals.get("fan", Metric.PARKED), totals.get("fan", Metric.FAILURES)
    # When it is delivered
    failed = worker.run(item("fan", 1))
    # Then the record fails (the message comes back after the queue's visibility timeout) and the ledger says why
    assert failed == [1]
    assert worker.ledger.failures[1]["error"] == "RetryableError"
    assert "could not park page 1" in worker.ledger.failures[1]["reason"]
    # And it is counted as a failure, not as parked
    assert totals.get("fan", Metric.PARKED) - parked_before == 0
    assert totals.get("fan", Metric.FAILURES) - failures_before == 1


@pytest.mark.parametrize(
    ("parked_for", "retry_after"),
    [
        pytest.param(MAX_PARKED_SECONDS - 300, 600, id="parked two days less five minutes, asked for ten more"),
        pytest.param(None, MAX_PARKED_SECONDS + 1, id="asked for more than two days at once"),
        pytest.param(None, 10**400, id="asked for a wait of 400 digits"),
    ],
)
def test_a_page_that_would_wait_past_the_limit_is_not_parked_and_fails_like_any_other(
    parked_for: int | None, retry_after: int
) -> None:
    # Given a page (parked for that long already) whose vendor asks for that wait
    worker = Worker("fan")
    worker.vendor.answer("page=1", ParkMessageError("429 with Retry-After", delay_seconds=retry_after))
    page = item("fan", 1)
    if parked_for is not None:
        page = page.parked(NOW, NOW - timedelta(seconds=parked_for))
    # When it is delivered
    failed = worker.run(page)
    # Then it is not parked: the record fails, and reaches the DLQ on its receive count if the vendor goes on
    assert failed == [1]
    assert worker.sender.sent == []
    assert worker.ledger.failures[1]["error"] == "RetryableError"
    assert worker.ledger.failures[1]["reason"].endswith("the page would wait past the 48-hour limit: not parked again")
