"""Talking to a vendor politely: pooled session, explicit timeouts, retries with backoff, a size cap.

Retries happen only on 429, 5xx, connection errors and timeouts: exponential backoff with full
jitter, ``Retry-After`` honoured (delta-seconds and HTTP-date) and capped, and never past the
Lambda's remaining time. A ``Retry-After`` longer than the source's ``max_inline_wait_seconds``
raises :class:`ParkMessageError` so that the message waits in the queue, not in a paid Lambda.

Nothing a vendor or a queue message sends is trusted:
- each request is checked as it is about to be sent: to the source's origin (scheme, host, port) or
  nowhere, whatever made its URL (the config, a cursor in a message, a redirect);
- a whole response (status line, headers, body) must arrive within the source's read timeout and the
  Lambda's remaining time: requests' read timeout applies to each socket read, so a vendor sending a
  byte a second would never trip it (:class:`ResponseDeadline`, apilake.response_deadline);
- every exception of the HTTP layer becomes a retryable or a permanent error with a text of our own:
  the libraries' texts can quote a URL with its key, or the header value (a key) they refused.
"""

from __future__ import annotations

import http.client
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from apilake import USER_AGENT as USER_AGENT  # importable from here too, as before
from apilake.auth import Authenticator, Credentials, CredentialStore, renewing
from apilake.config import Source
from apilake.exceptions import BadResponseError, ParkMessageError, PermanentHttpError, TransientHttpError
from apilake.observability import Metric, count, logger
from apilake.pagination import PageRequest, VendorPage
from apilake.quota import refused_for_rate
from apilake.ratelimit import Pacer
from apilake.records import MAX_DEPTH, NestingError, parse_document
from apilake.request_body import reported_errors
from apilake.response_deadline import DeadlineAdapter, ResponseDeadline

MAX_REDIRECTS = 5
KEEPS_METHOD = (307, 308)  # the redirects that repeat a request as it was (RFC 9110 15.4); others turn a POST to a GET
CHUNK_BYTES = 256 * 1024
# The longest wait a vendor can ask for: SQS's longest visibility timeout (the longest a message can be parked).
MAX_RETRY_AFTER_SECONDS = 43_200.0
# What requests, urllib3, http.client and the socket raise (requests' own exceptions are OSErrors;
# ValueError includes UnicodeError, and the header value that http.client refuses).
HTTP_LAYER_ERRORS = (OSError, ValueError, http.client.HTTPException, urllib3.exceptions.HTTPError)
DEFAULT_PORTS = {"http": 80, "https": 443}


class Deadline:
    """Seconds left before the work must stop (the Lambda's remaining time less a safety margin)."""

    def __init__(self, remaining_ms: Callable[[], int], margin_seconds: float) -> None:
        self._remaining_ms = remaining_ms
        self._margin = margin_seconds

    def remaining(self) -> float:
        return self._remaining_ms() / 1000.0 - self._margin

    @classmethod
    def unbounded(cls) -> Deadline:
        return cls(lambda: 10**9, 0.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), at most
    :data:`MAX_RETRY_AFTER_SECONDS`; None if absent or unreadable."""
    if value is None:
        return None
    seconds = _whole_number(value)
    if seconds is None:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _whole_number(value: str) -> float | None:
    """A header's number of ASCII digits, however many (``inf`` past a float's range); None for anything else."""
    value = value.strip()
    return float(value) if value.isascii() and value.isdigit() else None


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``url`` as requests reads it to connect; None when it has no host."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        if not host:
            return None
        return scheme, host.encode("idna").decode("ascii"), port or DEFAULT_PORTS.get(scheme, 0)
    except (ValueError, UnicodeError):
        return None


def _shown_origin(origin: tuple[str, str, int] | None) -> str:
    if origin is None:
        return "a URL without a host"
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port == DEFAULT_PORTS.get(scheme, 0) else f"{scheme}://{host}:{port}"


def new_session(pool_size: int = 10) -> requests.Session:
    session = requests.Session()
    adapter = DeadlineAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = False
    return session


class VendorClient:
    """Fetches pages of one source (GET, or POST with a JSON body) with its budget, retries, timeouts and
    credentials."""

    def __init__(
        self,
        source: Source,
        session: requests.Session,
        credentials: Authenticator,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.source = source
        self.session = session
        self.credentials = credentials
        self.pacer = pacer
        self._origin = _origin(source.base_url)
        self._sleep = sleep
        self._jitter = jitter

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        tally = _Tally()  # a 401 to renewable credentials (an OAuth2 token): renewed, and the page fetched once more
        return renewing(self.credentials, lambda: self._retrying(request, deadline, tally), tally)

    def _retrying(self, request: PageRequest, deadline: Deadline, tally: _Tally) -> VendorPage:
        """Attempts (tenacity) until one answers; a transient error is retried after its wait unless it was the
        last attempt or the wait would not end before the deadline (then it is raised)."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientHttpError),
            wait=self._wait,
            stop=stop_any(stop_after_attempt(self.source.retries.max_attempts), _StopAtDeadline(deadline)),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._attempt, request, deadline, tally)

    def _wait(self, state: RetryCallState) -> float:
        """The vendor's ``Retry-After`` (capped), else exponential backoff with full jitter."""
        retries = self.source.retries
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientHttpError) and error.retry_after is not None:
            return min(error.retry_after, retries.max_delay_seconds)
        ceiling = min(retries.max_delay_seconds, retries.base_delay_seconds * 2 ** (state.attempt_number - 1))
        return self._jitter(0.0, ceiling)

    def _before_sleep(self, state: RetryCallState) -> None:
        count(self.source.name, Metric.RETRIES)
        error = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying vendor request",
            extra={
                "attempt": state.attempt_number,
                "wait_seconds": round(state.upcoming_sleep, 3),
                "error": str(error),
            },
        )

    def _attempt(self, request: PageRequest, deadline: Deadline, tally: _Tally) -> VendorPage:
        if deadline.remaining() <= 0:
            raise TransientHttpError("no time left in this invocation to call the vendor")
        credentials = tally.credentials = self.credentials.current()  # per attempt: a token may expire mid-run
        if self.pacer is not None:  # a wait past what may be slept here parks the page (the quota is spent)
            self.pacer.wait(min(self.source.retries.max_inline_wait_seconds, max(0.0, deadline.remaining())))
        tally.attempts += 1
        url, params = request.url, {**request.params, **credentials.params}
        headers = {**self.source.headers, **credentials.headers}
        started = time.monotonic()
        with ResponseDeadline(max(0.1, min(self.source.timeouts.read_seconds, deadline.remaining()))) as cutoff:
            for _ in range(MAX_REDIRECTS + 1):
                response = self._send(url, params, headers, cutoff, request.method, request.body)
                if not response.is_redirect:
                    break
                url = self._redirect_target(url, response, request.method)
                params = dict(credentials.params)
            else:
                raise PermanentHttpError(f"more than {MAX_REDIRECTS} redirects from {self.credentials.redact(url)}")
            with response:
                count(self.source.name, Metric.API_LATENCY, (time.monotonic() - started) * 1000.0)
                if self.pacer is not None:  # what the vendor says is left of its limit paces what comes next
                    self.pacer.observe(response.headers)
                self._raise_for_status(response, deadline, tally)
                body = self._read_capped(response, cutoff)
        try:
            document: Any = parse_document(body, self.source.records_path)
        except NestingError:
            raise BadResponseError(
                f"the response of {self._shown(response)} is JSON nested deeper than {MAX_DEPTH} levels "
                f"({len(body)} bytes)"
            ) from None
        except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError; their text may quote the body
            content_type = response.headers.get("Content-Type", "no content type")
            raise BadResponseError(
                f"the response of {self._shown(response)} is not JSON ({content_type}, {len(body)} bytes): "
                f"{type(exc).__name__}"
            ) from None
        if self.source.error_path and (
            reported := reported_errors(document, self.source.error_path, credentials.scrub)
        ):
            raise BadResponseError(f"the response of {self._shown(response)} {reported}")
        return VendorPage(
            document=document,
            headers=response.headers,
            url=self.credentials.strip(response.url),
            size_bytes=len(body),
            latency_ms=(time.monotonic() - started) * 1000.0,
            attempts=tally.attempts,
            throttled=tally.throttled,
            scrub=credentials.scrub,  # for an error past the fetch that quotes the vendor (apilake.ingest)
        )

    def _send(
        self,
        url: str,
        params: dict[str, str],
        headers: dict[str, str],
        cutoff: ResponseDeadline,
        method: str = "GET",
        body: dict[str, Any] | None = None,
    ) -> requests.Response:
        """The request prepared (a POST's body as JSON, with Content-Type application/json unless the source's
        headers say otherwise), its origin checked on the URL as it will be sent, then sent."""
        try:
            request = requests.Request(method, url, params=params, headers=headers, json=body)
            prepared = self.session.prepare_request(request)
            target = _origin(prepared.url or "")
            if target is None or target != self._origin:
                raise PermanentHttpError(
                    f"source '{self.source.name}' may only call {_shown_origin(self._origin)}: "
                    f"refused to send a request to {_shown_origin(target)}"
                )
            return self.session.send(
                prepared,
                timeout=(self.source.timeouts.connect_seconds, cutoff.seconds),
                allow_redirects=False,
                stream=True,
            )
        except HTTP_LAYER_ERRORS as exc:
            raise self._failure(exc, url, cutoff) from None

    def _failure(
        self, error: Exception, url: str, cutoff: ResponseDeadline, content_encoding: str | None = None
    ) -> TransientHttpError | PermanentHttpError:
        """An exception of the HTTP layer as a retryable or a permanent error. Its text is not kept: it can
        quote the URL with its credential, or the header value (a key) that http.client refused."""
        shown, kind = self.credentials.redact(url), type(error).__name__
        if cutoff.expired:
            return self._too_slow(shown, cutoff)
        if isinstance(error, requests.Timeout):
            return TransientHttpError(f"timed out calling {shown}")
        if isinstance(error, requests.exceptions.ChunkedEncodingError):
            return TransientHttpError(f"the response of {shown} broke off: {kind}")
        if isinstance(error, requests.exceptions.ContentDecodingError):
            coding = f" (Content-Encoding {content_encoding[:60]!r})" if content_encoding else ""
            return PermanentHttpError(f"the response of {shown} could not be decoded{coding}: {kind}")
        if isinstance(error, requests.ConnectionError) or not isinstance(error, requests.RequestException | ValueError):
            return TransientHttpError(f"connection error calling {shown}: {kind}")  # the socket's, http.client's
        return PermanentHttpError(f"the request to {shown} could not be made: {kind} (its text may quote a secret)")

    def _too_slow(self, shown: str, cutoff: ResponseDeadline) -> TransientHttpError:
        return TransientHttpError(
            f"the response of {shown} took longer than {round(cutoff.seconds, 1):g}s, the limit for a whole response"
        )

    def _redirect_target(self, url: str, response: requests.Response, method: str = "GET") -> str:
        location = response.headers.get("Location", "")
        response.close()
        try:
            target = urljoin(url, location)
        except ValueError:
            target = ""
        if _origin(target) != self._origin:
            raise PermanentHttpError(
                f"redirect ({response.status_code}) to {_shown_origin(_origin(target))} refused: "
                f"source '{self.source.name}' may only call {self.source.base_url}",
                status=response.status_code,
            )
        if method == "POST" and response.status_code not in KEEPS_METHOD:
            # Browsers and requests would follow with a GET and no body: another question, whose answer could land.
            raise PermanentHttpError(
                f"redirect ({response.status_code}) of a POST to {self.credentials.redact(target)} refused: "
                "only 307 and 308 keep the method and the body; point the source's path at where it leads",
                status=response.status_code,
            )
        return self.credentials.strip(target)

    def _raise_for_status(self, response: requests.Response, deadline: Deadline, tally: _Tally) -> None:
        status = response.status_code
        if status < 400:
            return
        shown = self._shown(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        # A 403 that says the rate limit is spent (GitHub) is waited out as a 429.
        rated = refused_for_rate(status, response.headers, retry_after, time.time())
        if status == 429 or status >= 500 or rated is not None:
            retry_after = rated if rated is not None else retry_after
            if status in (429, 403):
                count(self.source.name, Metric.THROTTLED)
                tally.throttled += 1
            inline_limit = min(self.source.retries.max_inline_wait_seconds, deadline.remaining())
            if retry_after is not None and retry_after > inline_limit:
                raise ParkMessageError(
                    f"{status} from {shown} with {'Retry-After' if rated is None else 'its rate limit spent for'} "
                    f"{retry_after:.0f}s: parking the message",
                    delay_seconds=math.ceil(retry_after),
                )
            raise TransientHttpError(f"{status} from {shown}", status=status, retry_after=retry_after)
        raise PermanentHttpError(f"{status} from {shown}", status=status)

    def _read_capped(self, response: requests.Response, cutoff: ResponseDeadline) -> bytearray:
        """The body, in one buffer (a page is held once, not as chunks and a copy), refused past the limit."""
        limit = self.source.max_page_bytes
        declared = _whole_number(response.headers.get("Content-Length", ""))
        if declared is not None and declared > limit:
            raise PermanentHttpError(
                f"the response of {self._shown(response)} declares a Content-Length over the {limit}-byte limit"
            )
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                if len(body) + len(chunk) > limit:
                    raise PermanentHttpError(f"the response of {self._shown(response)} is over the {limit}-byte limit")
                body += chunk
        except HTTP_LAYER_ERRORS as exc:
            raise self._failure(exc, response.url, cutoff, response.headers.get("Content-Encoding")) from None
        if cutoff.expired:  # cut off at the deadline: what arrived may be a part of the body only
            raise self._too_slow(self._shown(response), cutoff)
        return body

    def _shown(self, response: requests.Response) -> str:
        return self.credentials.redact(response.url)


class _StopAtDeadline(stop_base):
    """Stop when the next wait would not end before the deadline (tenacity computes the wait first)."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self.deadline.remaining()


@dataclass
class _Tally:
    """What fetching one page took: the requests sent (retries included) and the 429s among the answers,
    recorded with the page in the ledger (the run report's retries and 429s)."""

    attempts: int = 0
    throttled: int = 0
    credentials: Credentials = field(default_factory=Credentials)  # those of the latest attempt


class VendorClients:
    """One :class:`VendorClient` per source for the life of a container: one pooled session, and a
    pacer per source that keeps its pace across invocations."""

    def __init__(
        self,
        session: requests.Session,
        credentials: CredentialStore,
        sleep: Callable[[float], None] = time.sleep,
        pacer_for: Callable[[Source], Pacer] | None = None,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._sleep = sleep
        self._pacer_for = pacer_for or self._worker_pacer
        self._clients: dict[str, VendorClient] = {}
        self._lock = threading.Lock()

    def for_source(self, source: Source) -> VendorClient:
        with self._lock:
            client = self._clients.get(source.name)
            if client is None or client.source != source:
                client = VendorClient(
                    source,
                    self._session,
                    self._credentials.for_source(source),
                    pacer=self._pacer_for(source),
                    sleep=self._sleep,
                )
                self._clients[source.name] = client
            return client

    def _worker_pacer(self, source: Source) -> Pacer:
        """A Lambda worker's share of the budget and of the vendor's quota (always a pacer: headers pace it too)."""
        return Pacer(source.budget.per_worker_rps, shared_by=source.budget.sharing_workers, sleep=self._sleep)
