"""What a vendor says of its rate limit in a response's headers: how many requests are left, and when the
window that holds them ends (:class:`Quota`). The pacer (apilake.ratelimit) slows down before a 429 with it,
and paces a source that has no configured budget.

The header styles read, the most precise first:
- the IETF fields (draft-ietf-httpapi-ratelimit-headers, 08 and later): ``RateLimit: "default";r=50;t=30``
  with ``RateLimit-Policy: "default";q=100;w=60`` (several policies: the one with the fewest requests per
  second left governs);
- the IETF draft's earlier fields (up to 07), as many APIs still send them: ``RateLimit-Limit``,
  ``RateLimit-Remaining``, ``RateLimit-Reset`` (delta seconds; GitLab sends epoch seconds there),
  ``RateLimit-Policy: 100;w=60``;
- the ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` family (GitHub, Twitter/X's
  ``x-rate-limit-*``, Discord's ``X-RateLimit-Reset-After``, ...), whose reset is either epoch seconds
  (GitHub, X), epoch milliseconds or delta seconds: a value past 10^9 is read as epoch seconds, past 10^12 as
  epoch milliseconds, else as delta seconds (the heuristic other clients use: no delta is 30 years long);
  an epoch reset is on the vendor's clock, so it is read against the response's ``Date`` (the vendor's clock
  too, to the second) when there is one, against ours only when there is none;
- Shopify's leaky bucket, ``X-Shopify-Shop-Api-Call-Limit: 32/40`` (used/capacity; no reset: it drains, at
  the capacity over 20 s on Shopify, apilake.ratelimit).

Unreadable values are ignored (a vendor's odd header never fails a page): ``None`` is "nothing said".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz

# Longer than any window worth pacing within (a day): a reset further away is read as "not now".
MAX_RESET_SECONDS = 86_400.0
# A rate-limit 403 that names no reset: wait as long as a one-minute window could take.
SPENT_WITHOUT_RESET_SECONDS = 60.0
_EPOCH_SECONDS = 1e9
_EPOCH_MILLISECONDS = 1e12
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*")
_PARAM = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]+))?\s*')
_SHOPIFY = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


@dataclass(frozen=True)
class Quota:
    """``remaining`` requests may be made until ``reset_seconds`` from now, when ``limit`` requests are
    allowed again for a window of ``window_seconds`` (either None when the vendor does not say)."""

    remaining: float
    reset_seconds: float | None
    limit: float | None = None
    window_seconds: float | None = None
    style: str = ""
    # The reset is known to the second only: a delta or epoch in whole seconds (rounded up by most vendors,
    # down by some), or an epoch read against the whole-second ``Date``. apilake.ratelimit reads it as a bound
    # the true reset is within a second of, and learns from the vendor's answers on which side.
    whole_seconds: bool = False

    @property
    def window_rate(self) -> float | None:
        """The requests per second a whole window allows, when the vendor states both."""
        if self.limit is None or not self.window_seconds:
            return None
        return self.limit / self.window_seconds


def read_quota(headers: Mapping[str, str], now: float) -> Quota | None:
    """The quota ``headers`` state, or None. ``now``: our clock (epoch seconds), to read an epoch reset when the
    response has no ``Date``; with one, an epoch reset is read against the vendor's own clock, so that our clock
    (or the vendor's) being seconds off does not move the reset."""
    lower = {name.lower(): value for name, value in headers.items()}
    clock = _Clock(now, vendor_date(lower.get("date")))
    for reader in (_structured, _draft, _x_ratelimit, _shopify):
        quota = reader(lower, clock)
        if quota is not None:
            return quota
    return None


@dataclass(frozen=True)
class _Clock:
    """Our clock, and the vendor's as its ``Date`` says (whole seconds, rounded down; None without a Date)."""

    now: float
    date: float | None


_last_date: tuple[str, float | None] = ("", None)  # a Date changes once a second: its last reading is reused


def vendor_date(value: str | None) -> float | None:
    """An HTTP ``Date`` (``Mon, 30 Nov 2026 13:14:52 GMT``) as epoch seconds; None if absent or unreadable."""
    global _last_date
    if value is None:
        return None
    seen, epoch = _last_date
    if value == seen:
        return epoch
    parsed = parsedate_tz(value)
    try:
        epoch = float(mktime_tz(parsed)) if parsed is not None else None
    except (OverflowError, ValueError):
        epoch = None
    _last_date = (value, epoch)
    return epoch


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    # A comma-separated list (a proxy joined two fields): the first one.
    match = _NUMBER.fullmatch(value.split(",")[0])
    return float(match[1]) if match else None


def _whole(value: str | None) -> bool:
    """True when a number was written in whole units (no fraction)."""
    return value is not None and value.split(",")[0].strip().isdigit()


def _is_epoch(value: float | None) -> bool:
    return value is not None and value >= _EPOCH_SECONDS


def _reset(value: float | None, clock: _Clock) -> float | None:
    """A reset as seconds from now, from delta seconds or an epoch (seconds or milliseconds). An epoch is read
    against the vendor's ``Date`` when there is one: the vendor's clock is less than a second past its Date, so
    the seconds from the Date to the reset are up to a second more than the true ones (``whole_seconds``),
    wherever our clock is; without a Date, against our clock."""
    if value is None:
        return None
    if value >= _EPOCH_MILLISECONDS:
        value /= 1000.0
    if value >= _EPOCH_SECONDS:
        value -= clock.date if clock.date is not None else clock.now
    if not math.isfinite(value) or value > MAX_RESET_SECONDS:
        return None
    return max(0.0, value)


def _items(value: str) -> list[tuple[str, dict[str, str]]]:
    """A structured-field list of ``"name";key=value;...`` items (RFC 9651, the subset the fields use);
    an item whose name is a bare token or number is kept too (``100;w=60`` of the earlier drafts)."""
    items = []
    for member in value.split(","):
        head, *params = member.split(";")
        name = head.strip().strip('"')
        parsed: dict[str, str] = {}
        for param in params:
            match = _PARAM.fullmatch(param)
            if match:
                parsed[match[1]] = (match[2] or "").strip('"')
        items.append((name, parsed))
    return items


def _structured(headers: Mapping[str, str], clock: _Clock) -> Quota | None:
    """``RateLimit: "p";r=50;t=30`` (+ ``RateLimit-Policy: "p";q=100;w=60``): the tightest policy governs."""
    value = headers.get("ratelimit")
    if value is None or "r=" not in value:
        return None
    policies = dict(_items(headers.get("ratelimit-policy", "")))
    best: Quota | None = None
    for name, params in _items(value):
        remaining, reset = _number(params.get("r")), _number(params.get("t"))
        if remaining is None:
            continue
        policy = policies.get(name, {})
        quota = Quota(
            remaining=remaining,
            reset_seconds=_reset(reset, clock) if reset is not None else None,
            limit=_number(policy.get("q")),
            window_seconds=_number(policy.get("w")),
            style="ietf",
            whole_seconds=_whole(params.get("t")) or (_is_epoch(reset) and clock.date is not None),
        )
        if best is None or _pace(quota) < _pace(best):
            best = quota
    return best


def _pace(quota: Quota) -> float:
    """Requests per second left (for choosing the tightest of several policies)."""
    if quota.reset_seconds:
        return quota.remaining / quota.reset_seconds
    return quota.window_rate if quota.window_rate is not None else math.inf


def _draft(headers: Mapping[str, str], clock: _Clock) -> Quota | None:
    """``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` and ``RateLimit-Policy: 100;w=60``: the drafts' reset is
    delta seconds, GitLab's epoch seconds (told apart as everywhere: no delta is 30 years long)."""
    return _family(headers, clock, "ratelimit-", "ietf-draft")


def _x_ratelimit(headers: Mapping[str, str], clock: _Clock) -> Quota | None:
    for prefix in ("x-ratelimit-", "x-rate-limit-"):
        quota = _family(headers, clock, prefix, prefix.rstrip("-"))
        if quota is not None:
            return quota
    return None


def _family(headers: Mapping[str, str], clock: _Clock, prefix: str, style: str) -> Quota | None:
    remaining = _number(headers.get(prefix + "remaining"))
    if remaining is None:
        return None
    after = _number(headers.get(prefix + "reset-after"))  # Discord: delta seconds, with a fraction
    raw = _number(headers.get(prefix + "reset"))
    reset = _reset(after if after is not None else raw, clock)
    window = None
    policy = headers.get(prefix + "policy")
    if policy:
        window = next((_number(p.get("w")) for _, p in _items(policy) if "w" in p), None)
    return Quota(
        remaining=remaining,
        reset_seconds=reset,
        limit=_number(headers.get(prefix + "limit")),
        window_seconds=window,
        style=style,
        # Known to the second: a delta or an epoch in whole seconds, or any epoch read against the Date.
        whole_seconds=after is None
        and raw is not None
        and (_whole(headers.get(prefix + "reset")) or (_is_epoch(raw) and clock.date is not None)),
    )


def _shopify(headers: Mapping[str, str], clock: _Clock) -> Quota | None:
    """A leaky bucket's fill: no reset (it drains continuously), so it only says when the bucket is nearly full."""
    value = headers.get("x-shopify-shop-api-call-limit")
    match = _SHOPIFY.fullmatch(value) if value else None
    if not match:
        return None
    used, capacity = float(match[1]), float(match[2])
    return Quota(remaining=max(0.0, capacity - used), reset_seconds=None, limit=capacity, style="shopify")


def refused_for_rate(status: int, headers: Mapping[str, str], retry_after: float | None, now: float) -> float | None:
    """The seconds to wait when a 403 is a rate limit in all but name (None: a real 403). GitHub answers a spent
    primary limit with 403 and ``X-RateLimit-Remaining: 0`` (wait for ``X-RateLimit-Reset``), a secondary limit
    with 403 and ``Retry-After``; others do the same."""
    if status != 403:
        return None
    if retry_after is not None:
        return retry_after
    quota = read_quota(headers, now)
    if quota is None or quota.remaining > 0:
        return None
    return quota.reset_seconds if quota.reset_seconds is not None else SPENT_WITHOUT_RESET_SECONDS
