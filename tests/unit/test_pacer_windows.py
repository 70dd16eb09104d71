"""The pacer uses a vendor's fixed windows whole however the vendor rounds its whole-second resets and wherever its
clock is: a simulated vendor and clock, one request at a time (decision 87, as amended)."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

import pytest

from apilake.ratelimit import WHOLE_SECOND, Pacer, ResetClock

START = 1_780_000_000.0  # our clock, epoch seconds
LATENCY = 0.01  # a request's round trip


@dataclass
class Vendor:
    """``limit`` requests a ``seconds`` window, the windows ``phase`` seconds past a whole multiple of ``seconds``
    of its clock (``offset`` ahead of ours); its reset in ``reset`` form, rounded ``rounding``, with a Date or
    not."""

    reset: Literal["epoch", "delta"]
    offset: float = 0.0
    phase: float = 0.0
    rounding: Literal["up", "down"] = "up"
    date: bool = True
    limit: int = 100
    seconds: float = 5.0
    used: Counter[int] = field(default_factory=Counter)
    refused: int = 0

    def answer(self, now: float) -> tuple[bool, dict[str, str]]:
        """A request reaching the vendor at ``now`` (our clock): let through or not, and the response's headers."""
        vendor_now = now + self.offset
        window = math.floor((vendor_now - self.phase) / self.seconds)
        reset = self.phase + (window + 1) * self.seconds
        allowed = self.used[window] < self.limit
        if allowed:
            self.used[window] += 1
        else:
            self.refused += 1
        whole = math.ceil if self.rounding == "up" else math.floor
        value = whole(reset) if self.reset == "epoch" else max(0, whole(reset - vendor_now))
        left = self.limit - self.used[window]
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(left)}
        headers["X-RateLimit-Reset"] = str(value)
        if self.date:
            headers["Date"] = formatdate(vendor_now, usegmt=True)
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset - vendor_now)))
        return allowed, headers

    def share_used(self) -> float:
        """The share of the limit used in the windows the run spanned whole (all but its first and last)."""
        inner = sorted(self.used)[1:-1]
        return sum(self.used[window] for window in inner) / (len(inner) * self.limit)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(vendor: Vendor, seconds: float = 60.0) -> Vendor:
    """Requests one at a time for ``seconds``, paced by the vendor's headers alone (no budget); a 429 is retried
    after its Retry-After, as the vendor client does."""
    clock = Clock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep, wall=clock)
    while clock.now < START + seconds:
        pacer.wait()
        clock.now += LATENCY / 2
        allowed, headers = vendor.answer(clock.now)
        clock.now += LATENCY / 2
        pacer.observe(headers)
        if not allowed:
            clock.now += float(headers["Retry-After"])
    return vendor


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(Vendor("epoch"), id="epoch reset, windows on whole seconds, clocks agree"),
        pytest.param(Vendor("epoch", offset=1.3), id="epoch reset, the vendor's clock 1.3 s ahead"),
        pytest.param(Vendor("epoch", offset=-2.6), id="epoch reset, the vendor's clock 2.6 s behind"),
        pytest.param(Vendor("epoch", phase=0.5), id="epoch reset rounded up, windows starting mid-second"),
        pytest.param(Vendor("epoch", phase=0.3, offset=0.8), id="epoch reset rounded up, mid-second, clock ahead"),
        pytest.param(Vendor("epoch", phase=0.5, rounding="down"), id="epoch reset rounded down, mid-second"),
        pytest.param(Vendor("epoch", phase=0.5, date=False), id="epoch reset rounded up, mid-second, no Date"),
        pytest.param(Vendor("delta"), id="delta reset rounded up"),
        pytest.param(Vendor("delta", phase=0.5, rounding="down"), id="delta reset rounded down"),
        pytest.param(Vendor("epoch", seconds=60.0, limit=1200, phase=0.7, offset=-0.4), id="a minute's window"),
    ],
)
def test_a_vendors_windows_are_used_whole_without_a_429_whatever_its_rounding_or_clock(vendor: Vendor) -> None:
    # Given a vendor that announces its fixed windows' resets in whole seconds (its way), and no budget
    # When a source is paced by its headers alone for a minute or more
    run(vendor, seconds=max(60.0, 5 * vendor.seconds))
    # Then the windows it spans are used to at least 95 % of the limit, and (past the first) without a 429
    assert vendor.share_used() >= 0.95
    assert vendor.refused <= 1


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(Vendor("delta", seconds=1.0, limit=10), id="1 s windows, delta reset"),
        pytest.param(Vendor("epoch", seconds=1.0, limit=10), id="1 s windows, epoch reset with Date"),
        pytest.param(Vendor("epoch", seconds=2.0, limit=20), id="2 s windows, epoch reset with Date"),
        pytest.param(Vendor("epoch", seconds=3.0, limit=30, phase=0.5), id="3 s windows, mid-second"),
        pytest.param(Vendor("delta", seconds=1.0, limit=10, rounding="down"), id="1 s windows, rounded down"),
    ],
)
def test_windows_of_a_second_or_two_are_not_overrun(vendor: Vendor) -> None:
    # Given a vendor whose windows are as short as its headers' resolution (a second or two)
    # When a source is paced by its headers alone for two minutes
    run(vendor, seconds=120.0)
    # Then hardly a request is refused (the windows cannot all be told apart: their use may fall short)
    assert vendor.refused <= 0.005 * sum(vendor.used.values()) + 1


def test_a_window_seen_to_reset_before_its_bound_moves_the_next_ones_reset_sooner() -> None:
    # Given bounds of a window heard over more than a second, the tightest at 110 (an epoch rounded up)
    clock = ResetClock()
    for now in (100.0, 102.0, 104.0):
        clock.reset_at(now, 110.0, 100, spent=False, sent=now - LATENCY)
    # When the next window's first answer (bound 120) comes at 109.4: the window had reset by then
    clock.reset_at(109.4, 120.0, 100, spent=False, sent=109.4 - LATENCY)
    # Then the next window is taken to reset 0.6 s before its bound (less a margin), and so are the ones after
    assert clock.reset_at(112.0, 120.0, 100, spent=False, sent=112.0 - LATENCY) == pytest.approx(119.45)
    clock.reset_at(119.6, 130.0, 100, spent=False, sent=119.6 - LATENCY)
    assert clock.reset_at(121.0, 130.0, 100, spent=False, sent=121.0 - LATENCY) == pytest.approx(129.45)


@pytest.mark.parametrize(
    ("heard", "next_heard", "limit_after", "expected"),
    [
        pytest.param((109.5,), 109.6, 100, 120.0, id="a window heard for less than a second teaches nothing"),
        pytest.param((100.0, 104.0), 109.6, 50, 120.0, id="another limit's windows start afresh"),
        pytest.param((100.0, 101.0), 102.0, 100, 119.0, id="a window reset early: a second sooner at most"),
    ],
)
def test_what_does_not_show_where_the_windows_reset_moves_the_reset_a_second_at_most(
    heard: tuple[float, ...], next_heard: float, limit_after: int, expected: float
) -> None:
    # Given a window's bounds (110) heard at ``heard``, then the next window's first answer at ``next_heard``
    clock = ResetClock()
    for now in heard:
        clock.reset_at(now, 110.0, 100, spent=False, sent=now - LATENCY)
    clock.reset_at(next_heard, 120.0, limit_after, spent=False, sent=next_heard - LATENCY)
    # When the next window's bounds are heard / Then its reset is its bound, moved no more than a second
    assert clock.reset_at(111.0, 120.0, limit_after, spent=False, sent=111.0 - LATENCY) == pytest.approx(expected)


def test_a_count_still_spent_when_sent_past_the_reset_moves_the_reset_a_second_past_that_request() -> None:
    # Given a window bounded at 110 (a vendor that rounds down: its reset is up to a second later)
    clock = ResetClock()
    clock.reset_at(100.0, 110.0, 100, spent=False, sent=100.0 - LATENCY)
    # When a request sent at 110.2, past the reset as estimated, is answered by the same window, nothing left
    reset = clock.reset_at(110.21, 110.21, 100, spent=True, sent=110.2)
    # Then the reset is taken to be a second past that request, and so is the next window's, from its bound
    assert reset == pytest.approx(110.2 + WHOLE_SECOND)
    clock.reset_at(111.3, 121.3, 100, spent=False, sent=111.3 - LATENCY)
    assert clock.reset_at(112.0, 121.0, 100, spent=False, sent=112.0 - LATENCY) == pytest.approx(121.0 + 1.2)


def test_an_answer_overtaken_by_a_later_requests_answer_is_old_news() -> None:
    # Given two requests in flight: the later one's answer, of a new window (99 left, reset in 5 s), read first
    clock = Clock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep, wall=clock)
    first_sent, second_read = threading.Event(), threading.Event()

    def first() -> None:
        pacer.wait()
        first_sent.set()
        second_read.wait(5)
        # When the earlier request's answer comes: the last window's, spent and due now
        pacer.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"})

    def second() -> None:
        first_sent.wait(5)
        pacer.wait()
        pacer.observe({"X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "5"})
        second_read.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Then the new window's pace holds (99 over 5 s), not a burst until a reset read as now
    assert [pacer.wait() for _ in range(3)][1:] == pytest.approx([5 / 99, 5 / 99], rel=1e-3)
