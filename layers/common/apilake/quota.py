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
- Shopify's leaky bucket, ``X-Shopify-Shop-Api-Call-Limit: 32/40`` (used/capacity; no reset: it drains, at
  the capacity over 20 s on Shopify, apilake.ratelimit).

Unreadable values are ignored (a vendor's odd header never fails a page): ``None`` is "nothing said".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

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
    # The reset was given in whole seconds (rounded up, as vendors round it): the true reset is up to a
    # second sooner, half a second on average.
    whole_seconds: bool = False

    @property
    def window_rate(self) -> float | None:
        """The requests per second a whole window allows, when the vendor states both."""
        if self.limit is None or not self.window_seconds:
            return None
        return self.limit / self.window_seconds


def read_quota(headers: Mapping[str, str], now: float) -> Quota | None:
    """The quota ``headers`` state (``now``: epoch seconds, to read an epoch reset), or None."""
    lower = {name.lower(): value for name, value in headers.items()}
    for reader in (_structured, _draft, _x_ratelimit, _shopify):
        quota = reader(lower, now)
        if quota is not None:
            return quota
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    # A comma-separated list (a proxy joined two fields): the first one.
    match = _NUMBER.fullmatch(value.split(",")[0])
    return float(match[1]) if match else None


def _whole(value: str | None) -> bool:
    """True when a number was written in whole units (no fraction)."""
    return value is not None and value.split(",")[0].strip().isdigit()


def _reset(value: float | None, now: float) -> float | None:
    """A reset as seconds from now, from delta seconds or an epoch (seconds or milliseconds)."""
    if value is None:
        return None
    if value >= _EPOCH_MILLISECONDS:
        value = value / 1000.0 - now
    elif value >= _EPOCH_SECONDS:
        value = value - now
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


def _structured(headers: Mapping[str, str], now: float) -> Quota | None:
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
            reset_seconds=_reset(reset, now) if reset is not None else None,
            limit=_number(policy.get("q")),
            window_seconds=_number(policy.get("w")),
            style="ietf",
            whole_seconds=_whole(params.get("t")),
        )
        if best is None or _pace(quota) < _pace(best):
            best = quota
    return best


def _pace(quota: Quota) -> float:
    """Requests per second left (for choosing the tightest of several policies)."""
    if quota.reset_seconds:
        return quota.remaining / quota.reset_seconds
    return quota.window_rate if quota.window_rate is not None else math.inf


def _draft(headers: Mapping[str, str], now: float) -> Quota | None:
    """``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` and ``RateLimit-Policy: 100;w=60``: the drafts' reset is
    delta seconds, GitLab's epoch seconds (told apart as everywhere: no delta is 30 years long)."""
    return _family(headers, now, "ratelimit-", "ietf-draft")


def _x_ratelimit(headers: Mapping[str, str], now: float) -> Quota | None:
    for prefix in ("x-ratelimit-", "x-rate-limit-"):
        quota = _family(headers, now, prefix, prefix.rstrip("-"))
        if quota is not None:
            return quota
    return None


def _family(headers: Mapping[str, str], now: float, prefix: str, style: str) -> Quota | None:
    remaining = _number(headers.get(prefix + "remaining"))
    if remaining is None:
        return None
    after = _number(headers.get(prefix + "reset-after"))  # Discord: delta seconds, with a fraction
    raw = _number(headers.get(prefix + "reset"))
    reset = _reset(after if after is not None else raw, now)
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
        # Rounded up to whole seconds: a delta (an epoch reset is the vendor's own second, not a rounding).
        whole_seconds=after is None
        and raw is not None
        and raw < _EPOCH_SECONDS
        and _whole(headers.get(prefix + "reset")),
    )


def _shopify(headers: Mapping[str, str], now: float) -> Quota | None:
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
