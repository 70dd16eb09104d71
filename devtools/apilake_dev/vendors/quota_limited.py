"""A fake vendor whose rate limit is a fixed window, as most real APIs count (GitHub's hour, a per-second
bucket), and which says how much of it is left in every response's headers, in one vendor style:

- ``ietf``: ``RateLimit: "default";r=<left>;t=<seconds to reset>`` and ``RateLimit-Policy: "default";q=N;w=W``
  (draft-ietf-httpapi-ratelimit-headers 08 and later);
- ``ietf-draft``: ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (delta seconds) (the drafts up to 07);
- ``github``: ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (epoch seconds), ``X-RateLimit-Used``;
- ``none``: no header at all (only the 429 and its ``Retry-After``).

The windows are counted on the vendor's clock (epoch seconds, ``clock_offset`` ahead of this machine's), every
``W`` seconds from the epoch, so they start on a whole second as GitHub's, X's and GitLab's do: an epoch reset
is then exact, and a delta reset is rounded up to whole seconds, as vendors send them. ``phase`` shifts the
windows off the whole second (a limiter that starts a window at its first request, e.g. express-rate-limit),
``rounding="down"`` rounds the resets down instead (limiters that read a whole-second TTL). Every response has
the vendor's ``Date``. Past the window's limit it answers 429 with ``Retry-After`` (the seconds to the reset,
rounded up) and the headers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from apilake_dev.vendors import fake
from apilake_dev.vendors.fake import Dataset, FakeVendor, VendorState

HeaderStyle = Literal["ietf", "ietf-draft", "github", "none"]
Rounding = Literal["up", "down"]


@dataclass
class FixedWindow:
    """``limit`` requests per ``seconds``-long window; the windows start at whole multiples of ``seconds`` from the
    epoch, plus ``phase`` seconds, on the vendor's clock."""

    limit: int
    seconds: float
    phase: float = 0.0
    window: int = -1
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """Count a request at ``now`` (the vendor's epoch seconds): (allowed, requests left in the window, the epoch
        second its window resets)."""
        index = math.floor((now - self.phase) / self.seconds)
        if index != self.window:
            self.window, self.used = index, 0
        reset = self.phase + (index + 1) * self.seconds
        if self.used >= self.limit:
            return False, 0, reset
        self.used += 1
        return True, self.limit - self.used, reset


class QuotaState(VendorState):
    """The fake vendor's state with a fixed-window limit per dataset, its clock, and the headers of the request in
    hand."""

    windows: dict[str, FixedWindow]
    served_windows: dict[str, list[int]]  # per dataset: the window (its number) of each request let through
    style: HeaderStyle
    clock_offset: float
    rounding: Rounding
    _current: threading.local

    def vendor_time(self) -> float:
        return time.time() + self.clock_offset

    def over_limit(self, dataset: str, now: float) -> bool:
        window = self.windows.get(dataset)
        if window is None:
            return super().over_limit(dataset, now)
        with self.lock:
            vendor_now = self.vendor_time()
            allowed, left, reset = window.take(vendor_now)
            if allowed:
                self.served_at[dataset].append(now)
                self.served_windows[dataset].append(window.window)
            else:
                self.limited[dataset] += 1
        self._current.headers = quota_headers(self.style, window, left, reset, vendor_now, self.rounding)
        if not allowed:
            self._current.headers["Retry-After"] = str(max(1, math.ceil(reset - vendor_now)))
        return not allowed

    def take_headers(self) -> dict[str, str]:
        headers: dict[str, str] = getattr(self._current, "headers", {})
        self._current.headers = {}
        return headers


def quota_headers(
    style: HeaderStyle, window: FixedWindow, left: int, reset: float, now: float, rounding: Rounding = "up"
) -> dict[str, str]:
    """``style``'s headers for ``left`` requests left until the epoch second ``reset``, at the vendor's ``now``."""
    whole = math.ceil if rounding == "up" else math.floor
    delta = max(0, whole(reset - now))
    limit, seconds = window.limit, math.ceil(window.seconds)
    if style == "ietf":
        return {"RateLimit": f'"default";r={left};t={delta}', "RateLimit-Policy": f'"default";q={limit};w={seconds}'}
    if style == "ietf-draft":
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(left),
            "RateLimit-Reset": str(delta),
            "RateLimit-Policy": f"{limit};w={seconds}",
        }
    if style == "github":
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Used": str(limit - left),
            "X-RateLimit-Reset": str(whole(reset)),
        }
    return {}


class _Handler(fake._Handler):
    def _raw(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        state = self.server.state
        extra = state.take_headers() if isinstance(state, QuotaState) else {}
        super()._raw(status, payload, content_type, {**(headers or {}), **extra})  # its Retry-After wins

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the vendor's clock."""
        state = self.server.state
        if timestamp is None and isinstance(state, QuotaState):
            timestamp = state.vendor_time()
        return super().date_time_string(timestamp)


class QuotaVendor(FakeVendor):
    """The fake vendor, its datasets limited to ``limits[name] = (requests, window seconds)`` each, saying so
    in ``style``'s headers; its clock ``clock_offset`` seconds ahead of this machine's (negative: behind), its
    windows ``phase`` seconds past the whole second, its resets rounded ``rounding``."""

    state: QuotaState

    def __init__(
        self,
        datasets: list[Dataset],
        limits: dict[str, tuple[int, float]],
        style: HeaderStyle,
        *,
        clock_offset: float = 0.0,
        phase: float = 0.0,
        rounding: Rounding = "up",
        **options: Any,
    ) -> None:
        super().__init__(datasets, **options)
        state = QuotaState(**{name: getattr(self.state, name) for name in VendorState.__dataclass_fields__})
        state.windows = {name: FixedWindow(limit, seconds, phase) for name, (limit, seconds) in limits.items()}
        state.served_windows = {name: [] for name in limits}
        state.style = style
        state.clock_offset = clock_offset
        state.rounding = rounding
        state._current = threading.local()
        self.state = state
        self._server.state = state
        self._server.RequestHandlerClass = _Handler
