"""Fake vendor APIs on 127.0.0.1: every pagination style over deterministic data, with faults on demand.

One server serves several datasets; the URL says the style and the dataset::

    /page_number/<ds>?page=N&per_page=S        {"data": [...], "meta": {"total": T}}  (T omitted with ?no_total=1)
    /offset/<ds>?offset=O&limit=L              {"items": [...], "total": T}
    /cursor/<ds>?cursor=C&limit=L              {"results": [...], "next_cursor": C2 | null, "has_more": bool}
    /next_url/<ds>?page=N&per_page=S           {"data": [...], "links": {"next": URL | null}}
    /link_header/<ds>?page=N&per_page=S               [...]  with  Link: <URL>; rel="next"
    /single/<ds>                               {"records": [...]}

``since`` / ``until`` (YYYY-MM-DD) keep the records whose ``updated_at`` falls in [since, until).
Faults (per style, dataset and page index) are consumed in order or kept forever; rate limits answer 429 past N/s.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import socket
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

STYLES = ("page_number", "offset", "cursor", "next_url", "link_header", "single")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# The hostile ones: a body (or the head) a byte at a time, stacked content encodings, JSON nested very deep.
HostileKind = Literal["drip", "drip_headers", "encodings", "deep_json"]
FaultKind = Literal["429", "status", "slow", "malformed", "truncated", "reset", "redirect", "html"] | HostileKind
DEEP_JSON_LEVELS = 200_000
STACKED_ENCODINGS = 6  # urllib3 decodes at most 5


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 503
    retry_after: str | None = None  # header value, as sent ("2" or an HTTP-date)
    delay_seconds: float = 0.0
    location: str | None = None

    @classmethod
    def throttle(cls, retry_after: float | None = None, http_date: bool = False) -> Fault:
        if retry_after is None:
            return cls("429", status=429)
        if http_date:
            when = datetime.now(UTC) + timedelta(seconds=retry_after)
            return cls("429", status=429, retry_after=format_datetime(when, usegmt=True))
        return cls("429", status=429, retry_after=str(int(retry_after)))


@dataclass
class Dataset:
    name: str
    total: int
    days: int = 1  # records spread over this many days of updated_at, ending the day before `last_day`
    last_day: date = date(2026, 11, 26)
    _windows: dict[tuple[str | None, str | None], list[dict[str, Any]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def record(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"{self.name}:{index}")
        day = self.last_day - timedelta(days=1 + index % self.days)
        created = EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400))
        updated = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400))
        return {
            "id": f"{self.name}-{index:07d}",
            "seq": index,
            "name": f"item {index}",
            "amount": round(rng.uniform(1, 5000), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "active": rng.random() > 0.2,
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "updated_at": updated.isoformat().replace("+00:00", "Z"),
            "customer": {
                "id": f"c-{rng.randrange(1, 2000):05d}",
                "country": rng.choice(["DE", "FR", "US", "GB", "NL"]),
            },
            "tags": rng.sample(["new", "vip", "promo", "b2b", "retail"], k=rng.randrange(0, 3)),
        }

    def records(self, since: str | None, until: str | None) -> list[dict[str, Any]]:
        """The records whose updated_at falls in [since, until) (made once, then served from memory)."""
        key = (since, until)
        if key not in self._windows:
            found = self._all()
            if since:
                found = [r for r in found if r["updated_at"][:10] >= since]
            if until:
                found = [r for r in found if r["updated_at"][:10] < until]
            self._windows[key] = found
        return self._windows[key]

    def serve(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The records a request's parameters select (vendors/changing.py: records after a value)."""
        return self.records(query.get("since"), query.get("until"))

    def chunk(self, records: list[dict[str, Any]], style: str, page: int, size: int) -> list[dict[str, Any]]:
        return records[(page - 1) * size : page * size]  # vendors/uneven.py: a capped size, a short page

    def _all(self) -> list[dict[str, Any]]:
        if (None, None) not in self._windows:
            self._windows[(None, None)] = [self.record(i) for i in range(self.total)]
        return self._windows[(None, None)]


TRANSIENT_KINDS = ("throttle_seconds", "throttle_date", "throttle_bare", "server_error", "reset", "slow", "truncated")
PERMANENT_KINDS = ("malformed", "cursor_repeat")
CHAIN_STYLES = ("cursor", "next_url", "link_header")


@dataclass(frozen=True)
class FaultPlan:
    """Faults drawn at random, reproducibly (seeded by style, dataset, page and attempt).

    Transient kinds hit a page's first two requests at their rate, then let it through, so every
    page can land with retries. Permanent kinds hit a page on every request (never page 1, which
    the planner probes): a malformed body, or (chains) a next cursor that repeats an earlier one.
    ``empty_last_page``: chains say there is more after their last records, then serve an empty page.
    """

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 7
    slow_seconds: float = 2.0
    empty_last_page: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(TRANSIENT_KINDS) - set(PERMANENT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s): {sorted(unknown)}")

    def permanent(self, style: str, dataset: str, page: int) -> str | None:
        if (page < 3 and style in CHAIN_STYLES) or page < 2:
            return None
        draw = random.Random(f"{self.seed}:{style}:{dataset}:{page}:permanent").random()
        threshold = 0.0
        for kind in PERMANENT_KINDS:
            if kind == "cursor_repeat" and style not in CHAIN_STYLES:
                continue
            threshold += self.rates.get(kind, 0.0)
            if draw < threshold:
                return kind
        return None

    def transient(self, style: str, dataset: str, page: int, attempt: int) -> tuple[str, Fault] | None:
        """The fault (and its kind) for this request, if one is drawn."""
        if attempt > 2:
            return None
        rng = random.Random(f"{self.seed}:{style}:{dataset}:{page}:{attempt}")
        draw, threshold = rng.random(), 0.0
        for kind in TRANSIENT_KINDS:
            threshold += self.rates.get(kind, 0.0)
            if draw < threshold:
                return kind, self._fault(kind, rng)
        return None

    def _fault(self, kind: str, rng: random.Random) -> Fault:
        if kind == "throttle_seconds":
            return Fault.throttle(retry_after=1)
        if kind == "throttle_date":
            return Fault.throttle(retry_after=1, http_date=True)
        if kind == "throttle_bare":
            return Fault.throttle()
        if kind == "server_error":
            return Fault("status", status=rng.choice([500, 502, 503, 504]))
        if kind == "slow":
            return Fault("slow", delay_seconds=self.slow_seconds)
        return Fault(kind)  # type: ignore[arg-type]


@dataclass
class VendorState:
    datasets: dict[str, Dataset] = field(default_factory=dict)
    faults: dict[tuple[str, str, int], deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    sticky: dict[tuple[str, str, int], Fault] = field(default_factory=dict)
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    api_key: str | None = None  # when set, requests must carry it (X-Api-Key, Bearer, or ?api_key=)
    protected: set[str] | None = None  # the datasets that need the key (None: all of them)
    plan: FaultPlan | None = None
    # what the plan did: (style, dataset, page) -> kind
    injected: Counter[str] = field(default_factory=Counter)
    permanent_pages: dict[tuple[str, str, int], str] = field(default_factory=dict)
    seen_urls: list[str] = field(default_factory=list)
    # dataset -> the most requests it answers in any one second (a sliding window); beyond: 429
    rate_limits: dict[str, float] = field(default_factory=dict)
    answered: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    served_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # let through, when
    limited: Counter[str] = field(default_factory=Counter)  # per dataset: requests answered 429 by the limit
    lock: threading.Lock = field(default_factory=threading.Lock)

    def over_limit(self, dataset: str, now: float) -> bool:
        """True when ``dataset`` already answered its limit's worth of requests in the last second.
        Requests turned away do not count against the limit."""
        limit = self.rate_limits.get(dataset)
        with self.lock:
            if limit is None:
                self.served_at[dataset].append(now)
                return False
            window = self.answered[dataset]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                self.limited[dataset] += 1
                return True
            window.append(now)
            self.served_at[dataset].append(now)
            return False

    def take_fault(self, style: str, dataset: str, page: int) -> Fault | None:
        key = (style, dataset, page)
        with self.lock:
            self.requests[key] += 1
            if key in self.sticky:
                return self.sticky[key]
            queue = self.faults.get(key)
            if queue:
                return queue.popleft()
            if self.plan is None:
                return None
            if self.plan.permanent(style, dataset, page) == "malformed":
                if key not in self.permanent_pages:
                    self.injected["malformed (pages)"] += 1
                self.permanent_pages[key] = "malformed"
                return Fault("malformed")
            drawn = self.plan.transient(style, dataset, page, self.requests[key])
            if drawn is None:
                return None
            kind, fault = drawn
            self.injected[kind if kind != "server_error" else f"server_error_{fault.status}"] += 1
            return fault

    def repeats_cursor(self, style: str, dataset: str, page: int) -> bool:
        if self.plan is None or self.plan.permanent(style, dataset, page) != "cursor_repeat":
            return False
        with self.lock:
            if (style, dataset, page) not in self.permanent_pages:
                self.injected["cursor_repeat (pages)"] += 1
            self.permanent_pages[(style, dataset, page)] = "cursor_repeat"
        return True


def encode_cursor(page: int) -> str:
    return base64.urlsafe_b64encode(f"p:{page}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("p:"):
        raise ValueError("bad cursor")
    return int(text[2:])


class _Handler(BaseHTTPRequestHandler):
    protocol_version, disable_nagle_algorithm = "HTTP/1.1", True  # head and body: two writes, no 40 ms delayed ACK
    server: _Server
    drip: tuple[str, float] | None = None  # ("body" or "head", seconds a byte) for this request: see _raw

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def do_GET(self) -> None:
        self.drip = None
        state = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with state.lock:
            state.seen_urls.append(self.path)
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) != 2 or segments[0] not in STYLES or segments[1] not in state.datasets:
            return self._json(404, {"error": f"no such endpoint {parts.path}"})
        style, name = segments
        if state.over_limit(name, time.monotonic()):
            return self._json(429, {"error": "rate limit exceeded"}, {"Retry-After": "1"})
        offered = (self.headers.get("X-Api-Key"), query.get("api_key"), self.headers.get("Authorization", "")[7:])
        needs_key = state.api_key is not None and (state.protected is None or name in state.protected)
        if needs_key and state.api_key not in offered:
            return self._json(401, {"error": "missing or wrong API key"})
        try:
            page, size = self._page_and_size(style, query)
        except ValueError as exc:
            return self._json(400, {"error": str(exc)})
        fault = state.take_fault(style, name, page)
        if fault is not None and self._fault(fault):
            return
        dataset = state.datasets[name]
        records = dataset.serve(query)
        chunk = dataset.chunk(records, style, page, size)
        trailing = state.plan is not None and state.plan.empty_last_page and style in CHAIN_STYLES
        has_next = page * size <= len(records) if trailing else page * size < len(records)
        next_page = page + 1
        if has_next and state.repeats_cursor(style, name, page):
            next_page = page - 1  # the cursor (or URL) that led to the previous page, handed out again
        self._respond(style, name, query, page, next_page, size, chunk, len(records), has_next)

    def _page_and_size(self, style: str, query: dict[str, str]) -> tuple[int, int]:
        if style == "single":
            return 1, 10**9
        if style == "offset":
            limit = int(query.get("limit", "100"))
            offset = int(query.get("offset", "0"))
            if limit <= 0 or offset < 0 or offset % limit:
                raise ValueError("offset must be a multiple of limit")
            return offset // limit + 1, limit
        if style == "cursor":
            cursor = query.get("cursor")
            return (decode_cursor(cursor) if cursor else 1), int(query.get("limit", "100"))
        page = int(query.get("page", "1"))
        if page < 1:
            raise ValueError("page starts at 1")
        return page, int(query.get("per_page", "100"))

    def _respond(
        self,
        style: str,
        name: str,
        query: dict[str, str],
        page: int,
        next_page: int,
        size: int,
        chunk: list[Any],
        total: int,
        has_next: bool,
    ) -> None:
        base = f"http://{self.headers.get('Host')}/{style}/{name}"
        carried = {k: v for k, v in query.items() if k in ("since", "until", "per_page", "api_key")}
        next_url = f"{base}?{urlencode({**carried, 'page': next_page})}" if has_next else None
        if style == "page_number":
            body: Any = {"data": chunk, "meta": {"page": page}}
            if query.get("no_total") != "1":
                body["meta"]["total"] = total
            return self._json(200, body)
        if style == "offset":
            return self._json(200, {"items": chunk, "total": total})
        if style == "cursor":
            cursor = encode_cursor(next_page) if has_next else None
            return self._json(200, {"results": chunk, "next_cursor": cursor, "has_more": has_next})
        if style == "next_url":
            return self._json(200, {"data": chunk, "links": {"next": next_url}})
        if style == "link_header":
            headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
            return self._json(200, chunk, headers)
        return self._json(200, {"records": chunk})

    def _fault(self, fault: Fault) -> bool:
        """Play a fault; False when it only delays the normal answer."""
        if fault.kind == "429" or fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._json(fault.status, {"error": "injected"}, headers)
            return True
        if fault.kind == "slow":
            time.sleep(fault.delay_seconds)
            return False
        if fault.kind in ("drip", "drip_headers"):
            self.drip = ("body" if fault.kind == "drip" else "head", fault.delay_seconds)
            return False
        if fault.kind == "encodings":
            payload = b'{"data": []}'
            for _ in range(STACKED_ENCODINGS):
                payload = gzip.compress(payload, mtime=0)
            self._raw(200, payload, "application/json", {"Content-Encoding": ", ".join(["gzip"] * STACKED_ENCODINGS)})
            return True
        if fault.kind == "deep_json":
            self._raw(200, b"[" * DEEP_JSON_LEVELS + b"]" * DEEP_JSON_LEVELS, "application/json")
            return True
        if fault.kind == "malformed":
            self._raw(200, b'{"data": [1, 2', "application/json")
            return True
        if fault.kind == "html":
            self._raw(200, b"<html>maintenance</html>", "text/html")
            return True
        if fault.kind == "redirect":
            self.send_response(302)
            self.send_header("Location", fault.location or "http://example.invalid/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if fault.kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"data": [')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        # reset: close without an answer
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.connection.close()
        return True

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(body).encode(), "application/json", headers)

    def _raw(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        if self.drip is not None and self.drip[0] == "head":
            lines = [f"HTTP/1.1 {status} {self.responses[status][0]}", f"Content-Type: {content_type}"]
            lines += [f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
            self._drip(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), self.drip[1])
            self.wfile.write(payload)
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.drip is not None:
            self._drip(payload, self.drip[1])
        else:
            self.wfile.write(payload)

    def _drip(self, data: bytes, seconds_a_byte: float) -> None:
        """Send ``data`` a byte at a time: every read gets something, and the whole takes forever."""
        for index in range(len(data)):
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            time.sleep(seconds_a_byte)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: VendorState

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a process ending with an idle keep-alive connection) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeVendor:
    """Runs the fake vendor in a background thread; use as a context manager."""

    def __init__(
        self,
        datasets: list[Dataset],
        api_key: str | None = None,
        protected: set[str] | None = None,
        plan: FaultPlan | None = None,
        port: int = 0,
        rate_limits: dict[str, float] | None = None,
    ) -> None:
        self.state = VendorState(
            datasets={d.name: d for d in datasets},
            api_key=api_key,
            protected=protected,
            plan=plan,
            rate_limits=dict(rate_limits or {}),
        )
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-vendor", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeVendor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, style: str, dataset: str, page: int, *faults: Fault, forever: bool = False) -> None:
        with self.state.lock:
            if forever:
                self.state.sticky[(style, dataset, page)] = faults[0]
            else:
                self.state.faults[(style, dataset, page)].extend(faults)

    def clear(self, style: str, dataset: str, page: int) -> None:
        with self.state.lock:
            self.state.sticky.pop((style, dataset, page), None)
            self.state.faults.pop((style, dataset, page), None)

    def requests_for(self, style: str, dataset: str, page: int) -> int:
        with self.state.lock:
            return self.state.requests[(style, dataset, page)]
