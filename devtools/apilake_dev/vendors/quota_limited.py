"""A fake vendor whose rate limit is a fixed window, as most real APIs count (GitHub's hour, a per-second
bucket), and which says how much of it is left in every response's headers, in one vendor style:

- ``ietf``: ``RateLimit: "default";r=<left>;t=<seconds to reset>`` and ``RateLimit-Policy: "default";q=N;w=W``
  (draft-ietf-httpapi-ratelimit-headers 08 and later);
- ``ietf-draft``: ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (delta seconds) (the drafts up to 07);
- ``github``: ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (epoch seconds), ``X-RateLimit-Used``;
- ``none``: no header at all (only the 429 and its ``Retry-After``).

Past the window's limit it answers 429 with ``Retry-After`` (the seconds to the reset, rounded up), and the
headers. Times in headers are whole seconds, as the vendors send them (the reset rounded up).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from apilake_dev.vendors import fake
from apilake_dev.vendors.fake import Dataset, FakeVendor, VendorState

HeaderStyle = Literal["ietf", "ietf-draft", "github", "none"]


@dataclass
class FixedWindow:
    """``limit`` requests per ``seconds``-long window, windows counted from ``started`` (monotonic)."""

    limit: int
    seconds: float
    started: float = field(default_factory=time.monotonic)
    window: int = -1
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """Count a request at ``now``: (allowed, requests left in the window, seconds to its reset)."""
        index = math.floor((now - self.started) / self.seconds)
        if index != self.window:
            self.window, self.used = index, 0
        reset = self.started + (index + 1) * self.seconds - now
        if self.used >= self.limit:
            return False, 0, reset
        self.used += 1
        return True, self.limit - self.used, reset


class QuotaState(VendorState):
    """The fake vendor's state with a fixed-window limit per dataset, and the headers of the request in hand."""

    windows: dict[str, FixedWindow]
    style: HeaderStyle
    _current: threading.local

    def over_limit(self, dataset: str, now: float) -> bool:
        window = self.windows.get(dataset)
        if window is None:
            return super().over_limit(dataset, now)
        with self.lock:
            allowed, left, reset = window.take(now)
            if allowed:
                self.served_at[dataset].append(now)
            else:
                self.limited[dataset] += 1
        self._current.headers = quota_headers(self.style, window, left, reset)
        if not allowed:
            self._current.headers["Retry-After"] = str(max(1, math.ceil(reset)))
        return not allowed

    def take_headers(self) -> dict[str, str]:
        headers: dict[str, str] = getattr(self._current, "headers", {})
        self._current.headers = {}
        return headers


def quota_headers(style: HeaderStyle, window: FixedWindow, left: int, reset: float) -> dict[str, str]:
    whole = max(0, math.ceil(reset))
    limit, seconds = window.limit, math.ceil(window.seconds)
    if style == "ietf":
        return {"RateLimit": f'"default";r={left};t={whole}', "RateLimit-Policy": f'"default";q={limit};w={seconds}'}
    if style == "ietf-draft":
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(left),
            "RateLimit-Reset": str(whole),
            "RateLimit-Policy": f"{limit};w={seconds}",
        }
    if style == "github":
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Used": str(limit - left),
            "X-RateLimit-Reset": str(math.ceil(time.time() + reset)),
        }
    return {}


class _Handler(fake._Handler):
    def _raw(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        state = self.server.state
        extra = state.take_headers() if isinstance(state, QuotaState) else {}
        super()._raw(status, payload, content_type, {**(headers or {}), **extra})  # its Retry-After wins


class QuotaVendor(FakeVendor):
    """The fake vendor, its datasets limited to ``limits[name] = (requests, window seconds)`` each, saying so
    in ``style``'s headers."""

    def __init__(
        self, datasets: list[Dataset], limits: dict[str, tuple[int, float]], style: HeaderStyle, **options: Any
    ) -> None:
        super().__init__(datasets, **options)
        state = QuotaState(**{name: getattr(self.state, name) for name in VendorState.__dataclass_fields__})
        state.windows = {name: FixedWindow(limit, seconds) for name, (limit, seconds) in limits.items()}
        state.style = style
        state._current = threading.local()
        self.state = state
        self._server.state = state
        self._server.RequestHandlerClass = _Handler
