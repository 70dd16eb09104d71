"""A rate limit is waited out, never slept through past what a worker may sleep: a spent share parks the page,
and a 403 that says the limit is spent (GitHub) is a 429 in all but name."""

from __future__ import annotations

import time

import pytest

from apilake.auth import Credentials
from apilake.exceptions import ParkMessageError, PermanentHttpError
from apilake.http import Deadline, VendorClient
from apilake.quota import SPENT_WITHOUT_RESET_SECONDS, refused_for_rate
from apilake.ratelimit import PaceParkedError, Pacer
from tests.unit.test_http import REQUEST, StubSession, make_source, response

NOW = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_slot_further_away_than_may_be_waited_is_not_taken_and_says_how_far() -> None:
    # Given a worker whose share of the vendor's quota is spent for the next 1,800 s
    clock = Clock()
    pacer = Pacer(None, shared_by=2, clock=clock, sleep=clock.sleep, wall=lambda: NOW)
    pacer.wait()
    pacer.observe({"RateLimit-Remaining": "1", "RateLimit-Reset": "1800"})
    # When it may wait at most 15 s / Then it does not sleep: it is told to park for the 1,800 s
    with pytest.raises(PaceParkedError) as raised:
        pacer.wait(at_most=15.0)
    assert raised.value.delay_seconds == 1800 and clock.slept == []
    # And a caller that may wait that long still gets the slot, not a later one
    assert pacer.wait(at_most=3600.0) == pytest.approx(1800.0)


def test_a_vendor_client_parks_the_page_when_its_share_of_the_quota_is_spent() -> None:
    # Given a vendor whose first answer says nothing is left for half an hour
    clock = Clock()
    pacer = Pacer(None, shared_by=1, clock=clock, sleep=clock.sleep, wall=time.time)
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 1800)}
    session = StubSession(response(200, {"data": [1]}, headers=headers))
    vendor = VendorClient(make_source(), session, Credentials(), pacer=pacer, sleep=clock.sleep)
    vendor.fetch(REQUEST, Deadline.unbounded())
    # When the next page is fetched / Then it is parked until the reset, without a request or a sleep
    with pytest.raises(ParkMessageError) as raised:
        vendor.fetch(REQUEST, Deadline.unbounded())
    assert 1790 <= raised.value.delay_seconds <= 1801
    assert len(session.calls) == 1 and clock.slept == []


@pytest.mark.parametrize(
    ("status", "headers", "retry_after", "expected"),
    [
        pytest.param(
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 42)},
            None,
            42.0,
            id="github primary",
        ),
        pytest.param(403, {"Retry-After": "60"}, 60.0, 60.0, id="github secondary"),
        pytest.param(403, {"X-RateLimit-Remaining": "0"}, None, SPENT_WITHOUT_RESET_SECONDS, id="spent, no reset"),
        pytest.param(
            403, {"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": str(int(NOW) + 42)}, None, None, id="a real 403"
        ),
        pytest.param(403, {}, None, None, id="a bare 403"),
        pytest.param(404, {"X-RateLimit-Remaining": "0"}, None, None, id="not a 403"),
    ],
)
def test_a_403_is_a_rate_limit_when_the_vendor_says_its_limit_is_spent(
    status: int, headers: dict[str, str], retry_after: float | None, expected: float | None
) -> None:
    assert refused_for_rate(status, headers, retry_after, NOW) == expected


def test_githubs_rate_limit_403_is_waited_out_not_failed_for_good() -> None:
    # Given GitHub answering 403 with its primary limit spent for 2 s, then the page
    reset = str(int(time.time()) + 2)
    spent = response(
        403, {"message": "API rate limit exceeded"}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    )
    session = StubSession(spent, response(200, {"data": [1]}))
    slept: list[float] = []
    vendor = VendorClient(make_source(), session, Credentials(), sleep=slept.append)
    # When the page is fetched / Then the 403 was waited out (no more than the reset) and the page fetched
    page = vendor.fetch(REQUEST, Deadline.unbounded())
    assert page.document == {"data": [1]} and page.throttled == 1
    assert len(slept) == 1 and 0 < slept[0] <= 3


def test_a_403_without_a_word_of_rate_limits_stays_permanent() -> None:
    session = StubSession(response(403, {"message": "Resource not accessible by integration"}))
    vendor = VendorClient(make_source(), session, Credentials(), sleep=lambda _: None)
    with pytest.raises(PermanentHttpError, match="403 from"):
        vendor.fetch(REQUEST, Deadline.unbounded())
