"""The vendor's rate-limit headers are read in each style, and the pacer slows down by them before a 429."""

from __future__ import annotations

import threading
from email.utils import formatdate

import pytest

from apilake.quota import Quota, read_quota
from apilake.ratelimit import BUCKET_DRAIN_SECONDS, Pacer

NOW = 1_780_000_000.0  # epoch seconds


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            {"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'},
            Quota(remaining=50, reset_seconds=30, limit=100, window_seconds=60, style="ietf"),
            id="ietf structured fields",
        ),
        pytest.param(
            {
                "RateLimit": '"burst";r=9;t=1, "day";r=4000;t=3600',
                "RateLimit-Policy": '"burst";q=10;w=1, "day";q=5000;w=86400',
            },
            Quota(remaining=4000, reset_seconds=3600, limit=5000, window_seconds=86400, style="ietf"),
            id="ietf: the tightest of two policies governs",
        ),
        pytest.param(
            {
                "RateLimit-Limit": "100",
                "RateLimit-Remaining": "7",
                "RateLimit-Reset": "12",
                "RateLimit-Policy": "100;w=60",
            },
            Quota(remaining=7, reset_seconds=12, limit=100, window_seconds=60, style="ietf-draft"),
            id="ietf draft 07 fields (reset in delta seconds)",
        ),
        pytest.param(
            {"RateLimit-Limit": "2000", "RateLimit-Remaining": "1990", "RateLimit-Reset": str(int(NOW) + 60)},
            Quota(remaining=1990, reset_seconds=60, limit=2000, style="ietf-draft"),
            id="gitlab: the draft names, reset in epoch seconds",
        ),
        pytest.param(
            {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(int(NOW) + 3600)},
            Quota(remaining=4999, reset_seconds=3600, limit=5000, style="x-ratelimit"),
            id="github: reset in epoch seconds",
        ),
        pytest.param(
            {"x-rate-limit-limit": "900", "x-rate-limit-remaining": "3", "x-rate-limit-reset": str(int(NOW) + 60)},
            Quota(remaining=3, reset_seconds=60, limit=900, style="x-rate-limit"),
            id="twitter/x spelling",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": str(int(NOW * 1000) + 2500)},
            Quota(remaining=10, reset_seconds=2.5, style="x-ratelimit"),
            id="reset in epoch milliseconds",
        ),
        pytest.param(
            {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "60"},
            Quota(remaining=59, reset_seconds=60, limit=60, style="x-ratelimit"),
            id="reset in delta seconds",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset-After": "0.75", "X-RateLimit-Reset": str(int(NOW) + 1)},
            Quota(remaining=4, reset_seconds=0.75, style="x-ratelimit"),
            id="discord: reset-after with a fraction wins",
        ),
        pytest.param(
            {"X-Shopify-Shop-Api-Call-Limit": "32/40"},
            Quota(remaining=8, reset_seconds=None, limit=40, style="shopify"),
            id="shopify leaky bucket",
        ),
        pytest.param({"Retry-After": "3"}, None, id="no quota header"),
        pytest.param({"X-RateLimit-Remaining": "lots"}, None, id="unreadable remaining"),
        pytest.param({"RateLimit": "garbage"}, None, id="unreadable structured field"),
    ],
)
def test_each_header_style_is_read(headers: dict[str, str], expected: Quota | None) -> None:
    # Given a response's headers in one vendor's style / When read / Then the quota it states
    quota = read_quota(headers, NOW)
    if expected is None:
        assert quota is None
        return
    assert quota is not None
    assert quota.remaining == expected.remaining
    if expected.reset_seconds is None:
        assert quota.reset_seconds is None
    else:
        assert quota.reset_seconds == pytest.approx(expected.reset_seconds)
    assert (quota.limit, quota.window_seconds, quota.style) == (expected.limit, expected.window_seconds, expected.style)


def _date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "reset_seconds", "whole_seconds"),
    [
        pytest.param(
            {"X-RateLimit-Remaining": "9", "X-RateLimit-Reset": str(int(NOW) + 60), "Date": _date(NOW - 3)},
            63.0,
            True,
            id="github: the vendor's clock 3 s behind ours",
        ),
        pytest.param(
            {"x-rate-limit-remaining": "9", "x-rate-limit-reset": str(int(NOW) + 60), "date": _date(NOW + 1.5)},
            59.0,
            True,
            id="x: the vendor's clock 1.5 s ahead (its Date to the second)",
        ),
        pytest.param(
            {"RateLimit-Remaining": "9", "RateLimit-Reset": str(int(NOW) + 60), "Date": _date(NOW - 10)},
            70.0,
            True,
            id="gitlab's epoch RateLimit-Reset",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "9", "X-RateLimit-Reset": str(int(NOW * 1000) + 2500), "Date": _date(NOW - 2)},
            4.5,
            True,
            id="epoch milliseconds: known to the Date's second",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "9", "X-RateLimit-Reset": str(int(NOW) + 60)},
            60.0,
            True,
            id="no Date: against our clock",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "9", "X-RateLimit-Reset": str(int(NOW) + 60), "Date": "yesterday-ish"},
            60.0,
            True,
            id="an unreadable Date: against our clock",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "9", "X-RateLimit-Reset": "30", "Date": _date(NOW - 100)},
            30.0,
            True,
            id="a delta reset: the Date changes nothing",
        ),
    ],
)
def test_an_epoch_reset_is_read_against_the_vendors_date(
    headers: dict[str, str], reset_seconds: float, whole_seconds: bool
) -> None:
    # Given a response whose reset is an epoch on the vendor's clock, and its Date / When read at our NOW
    quota = read_quota(headers, NOW)
    # Then the seconds to the reset are the vendor's (its Date to its reset), known to the second
    assert quota is not None and quota.reset_seconds == pytest.approx(reset_seconds)
    assert quota.whole_seconds is whole_seconds


def test_a_reset_in_the_past_or_absurdly_far_is_not_a_wait() -> None:
    past = read_quota({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 10)}, NOW)
    far = read_quota({"RateLimit-Remaining": "0", "RateLimit-Reset": "99999999"}, NOW)
    assert past is not None and past.reset_seconds == 0.0
    assert far is not None and far.reset_seconds is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def paced(rate: float | None = None, shared_by: int = 1) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(rate, shared_by=shared_by, clock=clock, sleep=clock.sleep, wall=lambda: NOW), clock


def test_without_a_budget_or_a_word_from_the_vendor_calls_are_not_paced() -> None:
    pacer, _ = paced()
    assert [pacer.wait() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_the_vendors_remaining_count_is_spread_over_what_is_left_of_its_window() -> None:
    # Given no budget, and a vendor with 20 requests left in the 10 s before its window resets
    pacer, _ = paced()
    pacer.wait()
    pacer.observe({"RateLimit-Remaining": "20", "RateLimit-Reset": "10.0"})
    # When more calls are made / Then they come one every 0.5 s
    waits = [pacer.wait() for _ in range(4)]
    assert waits[1:] == pytest.approx([0.5, 0.5, 0.5])


def test_resets_in_whole_seconds_are_bounds_and_the_tightest_one_is_kept() -> None:
    # Given a vendor saying "reset in 10 s" (rounded up), then, 0.6 s later, "in 9 s": the reset is at most 9.6 s away
    pacer, clock = paced()
    pacer.wait()
    pacer.observe({"RateLimit-Remaining": "20", "RateLimit-Reset": "10"})
    clock.now += 0.6
    pacer.observe({"RateLimit-Remaining": "19", "RateLimit-Reset": "9"})
    # When a later response (0.4 s on) says "9" again (a bound of 110: looser), its share now spent
    clock.now += 0.4
    pacer.observe({"RateLimit-Remaining": "0", "RateLimit-Reset": "9"})
    # Then this worker waits until the tightest bound, 109.6: 8.6 s from now, not 9
    assert pacer.wait() == pytest.approx(8.6)
    # And once past it, a new bound is the next window's
    pacer.observe({"RateLimit-Remaining": "0", "RateLimit-Reset": "5"})
    assert pacer.wait() == pytest.approx(5.0)


def test_a_spent_share_waits_for_the_reset_then_paces_at_the_windows_rate() -> None:
    # Given a vendor allowing 10 requests a 2 s window, with none left for the next 1.5 s
    pacer, _ = paced()
    pacer.wait()
    pacer.observe(
        {"RateLimit-Remaining": "0", "RateLimit-Reset": "1.5", "RateLimit-Limit": "10", "RateLimit-Policy": "10;w=2"}
    )
    # When the next calls are made / Then the first waits for the reset, the others 0.2 s apart (10 per 2 s)
    assert pacer.wait() == pytest.approx(1.5)
    assert pacer.wait() == pytest.approx(0.2)


def test_workers_sharing_a_quota_each_spend_their_share() -> None:
    # Given 4 Lambda workers of one source that all read the same 40 requests left in 10 s
    pacer, _ = paced(shared_by=4)
    pacer.wait()
    pacer.observe({"X-RateLimit-Remaining": "40", "X-RateLimit-Reset-After": "10"})
    # When this one calls again / Then it spends 10 of them over the 10 s: one a second
    assert [pacer.wait() for _ in range(3)][1:] == pytest.approx([1.0, 1.0])


def test_the_slower_of_budget_and_vendor_governs() -> None:
    pacer, _ = paced(rate=2.0)  # one every 0.5 s
    pacer.wait()
    pacer.observe({"RateLimit-Remaining": "100", "RateLimit-Reset": "10.0"})  # vendor: 10/s
    assert pacer.wait() == pytest.approx(0.5)
    pacer.observe({"RateLimit-Remaining": "5", "RateLimit-Reset": "10.0"})  # vendor: one every 2 s
    pacer.wait()
    assert pacer.wait() == pytest.approx(2.0)


def test_a_leaky_bucket_is_paced_at_its_drain_rate_past_half_full() -> None:
    # Given Shopify's bucket of 40 (drained in 20 s: one call every 0.5 s), 25 used
    pacer, _ = paced()
    step = BUCKET_DRAIN_SECONDS / 40
    pacer.wait()
    pacer.observe({"X-Shopify-Shop-Api-Call-Limit": "25/40"})
    # When calls follow / Then they come one drain step apart (after the one already scheduled)
    assert [pacer.wait() for _ in range(3)] == pytest.approx([0.0, step, step])


def test_a_full_leaky_bucket_is_drained_a_step_first_and_an_emptied_one_bursts() -> None:
    pacer, _ = paced()
    step = BUCKET_DRAIN_SECONDS / 40
    pacer.wait()
    pacer.observe({"X-Shopify-Shop-Api-Call-Limit": "40/40"})
    assert pacer.wait() == pytest.approx(step)
    pacer.observe({"X-Shopify-Shop-Api-Call-Limit": "3/40"})
    pacer.wait()
    assert [pacer.wait(), pacer.wait()] == [0.0, 0.0]


def test_requests_sent_after_a_response_are_taken_off_what_it_says_is_left() -> None:
    # Given one thread's request, then three more sent by another thread before the first one's response is read
    pacer, _ = paced()
    sent, others_sent = threading.Event(), threading.Event()

    def first() -> None:
        pacer.wait()
        sent.set()
        others_sent.wait(5)
        # When its response says 3 are left in the 10 s before the reset
        pacer.observe({"RateLimit-Remaining": "3", "RateLimit-Reset": "10.0"})

    def others() -> None:
        sent.wait(5)
        for _ in range(3):
            pacer.wait()
        others_sent.set()

    threads = [threading.Thread(target=first), threading.Thread(target=others)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Then those 3 are already on their way: nothing more until the reset
    assert pacer.wait() == pytest.approx(10.0)


def test_unreadable_headers_change_nothing() -> None:
    pacer, _ = paced(rate=4.0)
    pacer.wait()
    assert pacer.observe({"X-RateLimit-Remaining": "n/a"}) is None
    assert pacer.wait() == pytest.approx(0.25)


@pytest.mark.parametrize(("rate", "shared_by"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_pacer_refuses_a_rate_or_share_that_cannot_pace(rate: float, shared_by: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacer(rate, shared_by=shared_by)
