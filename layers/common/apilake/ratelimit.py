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


# A leaky bucket (no reset) drains at its capacity over this many seconds: Shopify's REST buckets (40 at 2/s,
# 80 at 4/s on Plus) do. Above half full, calls are spaced at the drain rate; below it they may burst.
BUCKET_DRAIN_SECONDS = 20.0
# How long a bucket's word paces calls without a newer one.
BUCKET_WORD_SECONDS = 1.0
# A reset given in whole seconds is the true one rounded up to the next whole second.
WHOLE_SECOND = 1.0
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
        self._reset_bound: float | None = None  # the earliest reset heard in this window (whole-second resets)
        self._sent = 0  # slots taken so far: a response's count misses the requests sent after its own
        self._ticket = threading.local()  # this thread's last slot number (its response is observed by it)

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
            self._ticket.number = self._sent
            self._sent += 1
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def observe(self, headers: Mapping[str, str]) -> Quota | None:
        """Read the vendor's quota from a response's headers (any status: a 429's count too) and pace by it. Called
        by the thread that made the request: the requests this process sent after it are not in the vendor's
        count yet, and are taken off what it says is left."""
        quota = read_quota(headers, self._wall())
        if quota is None:
            return None
        now = self._clock()
        with self._lock:
            ticket = getattr(self._ticket, "number", None)
            in_flight = self._sent - ticket - 1 if ticket is not None else 0
            share = (quota.remaining - in_flight) / self.shared_by
            self.quota = quota
            window_rate = quota.window_rate
            self._after_reset = self.shared_by / window_rate if window_rate else 0.0
            if quota.reset_seconds is None:
                self._bucket(quota, share, now)
                return quota
            reset_at = self._reset_at(now, quota)
            self._quota_until = reset_at
            if share < 1:  # this process's share is spent: nothing until the window resets (at the latest)
                self._vendor_interval = 0.0
                self._next_at = max(self._next_at, reset_at)
            else:
                self._vendor_interval = max(reset_at - now, MIN_SPREAD_SECONDS) / share
        return quota

    def _reset_at(self, now: float, quota: Quota) -> float:
        """When the vendor's window resets. A reset in whole seconds is rounded up: each response bounds the true
        reset from above, so within one window the earliest bound heard is kept (the bounds tighten as responses
        come in); a bound a second or more past the kept one, or heard after it, is the next window's."""
        assert quota.reset_seconds is not None
        bound = now + quota.reset_seconds
        if not quota.whole_seconds:
            self._reset_bound = None
            return bound
        kept = self._reset_bound
        if kept is None or now >= kept or bound >= kept + WHOLE_SECOND:
            self._reset_bound = bound
        else:
            self._reset_bound = min(kept, bound)
        return self._reset_bound

    def _bucket(self, quota: Quota, share: float, now: float) -> None:
        """A leaky bucket (no reset; it drains continuously): free to burst while it is under half full, then
        one call per drain step (this process's share of it), and a full one drained a step first."""
        capacity = quota.limit or 0.0
        if capacity <= 0:
            return
        step = self.shared_by * BUCKET_DRAIN_SECONDS / capacity
        self._quota_until = now + BUCKET_WORD_SECONDS
        self._after_reset = 0.0
        self._vendor_interval = step if quota.remaining <= capacity / 2 else 0.0
        if share < 1:
            self._next_at = max(self._next_at, now + step)
