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
from dataclasses import dataclass

from apilake.exceptions import ParkMessageError
from apilake.quota import Quota, read_quota


class PaceParkedError(ParkMessageError):
    """The next request's slot is further away than may be waited here: the page is parked until then."""


# A leaky bucket (no reset) drains at its capacity over this many seconds: Shopify's REST buckets (40 at 2/s,
# 80 at 4/s on Plus) do. Above half full, calls are spaced at the drain rate; below it they may burst.
BUCKET_DRAIN_SECONDS = 20.0
# How long a bucket's word paces calls without a newer one.
BUCKET_WORD_SECONDS = 1.0
# A reset known to the second (apilake.quota's ``whole_seconds``) is within this of the true one.
WHOLE_SECOND = 1.0
# Kept past the moment a window was seen to reset when that moment is learned (the next window's reset
# is placed no sooner than this after it): a few requests' spacing, for the jitter of the bounds heard.
LEARNED_RESET_MARGIN = 0.05
MIN_SPREAD_SECONDS = 0.05


@dataclass
class ResetClock:
    """When the vendor's window resets, from resets known to the second (decision 87, as amended).

    Each response bounds the reset (``now`` + what it says): within a window the tightest bound heard is kept,
    and the window is taken to reset at that bound plus ``correction``, learned from what the vendor did:
    - a response of the next window heard before the window was due to end says the window had reset by then:
      the correction becomes the time from the kept bound to that response, a second sooner at most (negative
      when the vendor rounds an epoch reset up, its windows starting mid-second: those bounds never tighten);
    - a request sent at or after the estimated reset, answered by the same window with the share still spent,
      says the reset is later: the vendor rounds down, or its clock runs behind ours (an epoch with no Date):
      the correction moves a second past that request.
    The learned correction holds for the next windows of the same limit (a vendor's windows keep their phase).
    """

    kept: float | None = None  # the tightest bound heard in this window
    heard_from: float = 0.0  # when this window's first bound was heard
    correction: float = 0.0
    limit: float | None = None  # the limit whose windows these are: another one starts afresh

    def reset_at(self, now: float, bound: float, limit: float | None, *, spent: bool, sent: float | None) -> float:
        """The estimated reset, after a response heard at ``now`` bounding it at ``bound``, whose request was sent
        at ``sent`` and which left this process's share ``spent``."""
        if limit != self.limit:
            self.kept, self.correction, self.limit = None, 0.0, limit
        kept = self.kept
        if kept is None:
            kept, self.heard_from = bound, now
        elif self._next_window(now, bound, kept, spent=spent, sent=sent):
            # Heard before this one was due to end: it had ended by now. Learned only from a window whose bounds
            # were heard over a whole second (as tight as they get), and down to zero unless already past it.
            if now < kept + self.correction and now - self.heard_from >= WHOLE_SECOND:
                learned = max(now - kept + LEARNED_RESET_MARGIN, -WHOLE_SECOND)
                self.correction = min(learned, max(self.correction, 0.0))
            kept, self.heard_from = bound, now
        elif now < kept + self.correction:
            kept = min(kept, bound)
        elif spent:  # due, and the count still spent: this window's still
            if sent is not None and sent >= kept + self.correction:  # sent once due: the reset is later
                self.correction = sent - kept + WHOLE_SECOND
        else:  # heard past the reset, some count left: the next window's
            kept, self.heard_from = bound, now
        self.kept = kept
        estimate = kept + self.correction
        if spent and estimate <= now:  # a spent share never resets in the past: the vendor's latest word holds
            estimate = max(estimate, bound)
        return estimate

    @staticmethod
    def _next_window(now: float, bound: float, kept: float, *, spent: bool, sent: float | None) -> bool:
        """A bound a second (and the request's round trip) past the kept one is the next window's, unless it is
        spent and due within a second: the same window's still, its reset rounded down or long past our guess."""
        round_trip = now - sent if sent is not None else 0.0
        return bound >= kept + WHOLE_SECOND + round_trip and not (spent and bound - now < WHOLE_SECOND)


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
        self.reset_clock = ResetClock()  # when the vendor's window resets (resets known to the second)
        self._sent = 0  # slots taken so far: a response's count misses the requests sent after its own
        self._heard = -1  # the latest slot whose response was read: an earlier one's is older news
        self._ticket = threading.local()  # this thread's last slot, its number and time (its response is seen by it)

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
            self._ticket.number, self._ticket.slot = self._sent, slot
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
            if ticket is not None:
                if ticket < self._heard:  # overtaken by a later request's answer (the last window's, maybe)
                    return quota
                self._heard = ticket
            in_flight = self._sent - ticket - 1 if ticket is not None else 0
            share = (quota.remaining - in_flight) / self.shared_by
            self.quota = quota
            window_rate = quota.window_rate
            self._after_reset = self.shared_by / window_rate if window_rate else 0.0
            if quota.reset_seconds is None:
                self._bucket(quota, share, now)
                return quota
            if quota.whole_seconds:
                sent = getattr(self._ticket, "slot", None)
                bound = now + quota.reset_seconds
                reset_at = self.reset_clock.reset_at(now, bound, quota.limit, spent=share < 1, sent=sent)
            else:
                reset_at = now + quota.reset_seconds
            self._quota_until = reset_at
            if share < 1:  # this process's share is spent: nothing until the window resets (at the latest)
                self._vendor_interval = 0.0
                self._next_at = max(self._next_at, reset_at)
            else:
                self._vendor_interval = max(reset_at - now, MIN_SPREAD_SECONDS) / share
        return quota

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
