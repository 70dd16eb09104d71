"""A pacer: keeps one process's requests to a source at a steady rate: its share of the source's configured
budget, and no faster than what the vendor says is left of its limit (apilake.quota).

The vendor's word is shared: ``shared_by`` processes (a source's Lambda workers, at most its
``max_concurrency``) read the same remaining count, so each one spends its share of it. Within one process
the pace is exact: every thread waits for its slot on one schedule.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

from apilake.exceptions import ParkMessageError
from apilake.quota import Quota, read_quota


class PaceParkedError(ParkMessageError):
    """The next request's slot is further away than may be waited here: the page is parked until then."""


# A leaky bucket (no reset) that is full: how long to let it drain before the next request.
FULL_BUCKET_WAIT_SECONDS = 1.0
# A reset given in whole seconds is the true one rounded up: half a second too long, on average.
WHOLE_SECOND_ROUNDING = 0.5
MIN_SPREAD_SECONDS = 0.05


class Pacer:
    """Spaces calls evenly, with no bursts, so the vendor sees an even load.

    ``rate_per_second``: the configured budget's share (None: none configured, the vendor's headers alone pace
    the calls). After each response, :meth:`observe` reads the vendor's quota: ``remaining`` requests in the
    ``reset_seconds`` left of its window become one slot every ``reset / (remaining / shared_by)`` seconds
    when that is slower than the budget, and none at all until the reset when this process's share is spent.
    """

    def __init__(
        self,
        rate_per_second: float | None,
        *,
        shared_by: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if shared_by < 1:
            raise ValueError("shared_by must be at least 1")
        self.interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self.shared_by = shared_by
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._vendor_interval = 0.0  # the vendor's pace until _quota_until
        self._quota_until = 0.0  # when the vendor's window (as last heard) ends
        self._after_reset = 0.0  # the pace once it has ended: its whole window's rate, if stated
        self.quota: Quota | None = None  # the vendor's last word, for logs and tests

    def wait(self, at_most: float | None = None) -> float:
        """Block until this call's slot; returns the seconds waited. A slot more than ``at_most`` seconds away is
        not taken: :class:`PaceParkedError` says how far it is (the caller parks its work instead of sleeping)."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_at, now)
            if at_most is not None and slot - now > at_most:
                raise PaceParkedError(
                    f"the vendor's rate limit allows this worker's next request in {slot - now:.0f}s",
                    delay_seconds=math.ceil(slot - now),
                )
            vendor = self._vendor_interval if slot < self._quota_until else self._after_reset
            self._next_at = slot + max(self.interval, vendor)
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def observe(self, headers: Mapping[str, str]) -> Quota | None:
        """Read the vendor's quota from a response's headers (any status: a 429's count too) and pace by it."""
        quota = read_quota(headers, self._wall())
        if quota is None:
            return None
        now = self._clock()
        share = quota.remaining / self.shared_by
        window_rate = quota.window_rate
        with self._lock:
            self.quota = quota
            self._after_reset = self.shared_by / window_rate if window_rate else 0.0
            if quota.reset_seconds is None:  # a leaky bucket: pace only when it is full
                if share < 1:
                    self._next_at = max(self._next_at, now + FULL_BUCKET_WAIT_SECONDS)
                return quota
            reset_at = now + quota.reset_seconds
            self._quota_until = reset_at
            if share < 1:  # this process's share is spent: nothing until the window resets (at the latest)
                self._vendor_interval = 0.0
                self._next_at = max(self._next_at, reset_at)
            else:
                # Spread over the expected time left: a reset in whole seconds was rounded up, half a second
                # on average (spreading over the rounded time leaves requests unspent when the window ends).
                expected = quota.reset_seconds - WHOLE_SECOND_ROUNDING if quota.whole_seconds else quota.reset_seconds
                self._vendor_interval = max(expected, MIN_SPREAD_SECONDS) / share
        return quota
