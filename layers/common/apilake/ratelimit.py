"""A pacer: keeps one worker's requests to a steady rate (its share of the source's budget)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Spaces calls ``1 / rate`` seconds apart; no bursts, so the vendor sees an even load."""

    def __init__(
        self,
        rate_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.interval = 1.0 / rate_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at = 0.0

    def wait(self) -> float:
        """Block until this call's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_at, now)
            self._next_at = slot + self.interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay
