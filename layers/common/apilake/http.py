"""Talking to a vendor politely: pooled session, explicit timeouts, retries with backoff, a size cap.

Retries happen only on 429, 5xx, connection errors and timeouts: exponential backoff with full
jitter, ``Retry-After`` honoured (delta-seconds and HTTP-date) and capped, and never past the
Lambda's remaining time. A ``Retry-After`` longer than the source's ``max_inline_wait_seconds``
raises :class:`ParkMessageError` so that the message waits in the queue, not in a paid Lambda.
Only the configured host is called: a redirect elsewhere is refused.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from apilake.auth import Credentials, CredentialStore
from apilake.config import Source
from apilake.exceptions import BadResponseError, ParkMessageError, PermanentHttpError, TransientHttpError
from apilake.observability import Metric, count, logger
from apilake.pagination import PageRequest, VendorPage
from apilake.ratelimit import Pacer
from apilake.records import parse_document

MAX_REDIRECTS = 5
CHUNK_BYTES = 256 * 1024
USER_AGENT = "apilake/0.1 (+https://github.com/apilake)"


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
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def new_session(pool_size: int = 10) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = False
    return session


class VendorClient:
    """GETs pages of one source with its budget, retries, timeouts and credentials."""

    def __init__(
        self,
        source: Source,
        session: requests.Session,
        credentials: Credentials,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.source = source
        self.session = session
        self.credentials = credentials
        self.pacer = pacer
        self._sleep = sleep
        self._jitter = jitter

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        retries = self.source.retries
        retrying = Retrying(
            retry=retry_if_exception_type(TransientHttpError),
            wait=self._wait,
            stop=stop_any(stop_after_attempt(retries.max_attempts), _StopAtDeadline(deadline)),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._attempt, request, deadline)

    def _wait(self, state: RetryCallState) -> float:
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

    def _attempt(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        if deadline.remaining() <= 0:
            raise TransientHttpError("no time left in this invocation to call the vendor")
        if self.pacer is not None:
            self.pacer.wait()
        url, params = request.url, {**request.params, **self.credentials.params}
        headers = {**self.source.headers, **self.credentials.headers}
        started = time.monotonic()
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get(url, params, headers, deadline)
            if not response.is_redirect:
                break
            url = self._redirect_target(url, response)
            params = dict(self.credentials.params)
        else:
            raise PermanentHttpError(f"more than {MAX_REDIRECTS} redirects from {self.credentials.redact(url)}")
        with response:
            count(self.source.name, Metric.API_LATENCY, (time.monotonic() - started) * 1000.0)
            self._raise_for_status(response, deadline)
            body = self._read_capped(response)
        try:
            document: Any = parse_document(body, self.source.records_path)
        except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError; their text may quote the body
            content_type = response.headers.get("Content-Type", "no content type")
            raise BadResponseError(
                f"the response of {self._shown(response)} is not JSON ({content_type}, {len(body)} bytes): "
                f"{type(exc).__name__}"
            ) from None
        return VendorPage(
            document=document,
            headers=response.headers,
            url=self.credentials.strip(response.url),
            size_bytes=len(body),
            latency_ms=(time.monotonic() - started) * 1000.0,
        )

    def _get(self, url: str, params: dict[str, str], headers: dict[str, str], deadline: Deadline) -> requests.Response:
        timeouts = self.source.timeouts
        read_timeout = max(0.1, min(timeouts.read_seconds, deadline.remaining()))
        try:
            return self.session.get(
                url,
                params=params,
                headers=headers,
                timeout=(timeouts.connect_seconds, read_timeout),
                allow_redirects=False,
                stream=True,
            )
        # The exceptions' own text carries the full URL (and a query-string key): say it without them.
        except requests.Timeout:
            raise TransientHttpError(f"timed out calling {self.credentials.redact(url)}") from None
        except requests.ConnectionError as exc:
            raise TransientHttpError(
                f"connection error calling {self.credentials.redact(url)}: {type(exc).__name__}"
            ) from None

    def _redirect_target(self, url: str, response: requests.Response) -> str:
        location = response.headers.get("Location", "")
        response.close()
        target = urljoin(url, location)
        parts = urlsplit(target)
        if (parts.scheme, parts.netloc) != self.source.origin:
            raise PermanentHttpError(
                f"redirect ({response.status_code}) to {parts.scheme}://{parts.netloc} refused: "
                f"source '{self.source.name}' may only call {self.source.base_url}",
                status=response.status_code,
            )
        return self.credentials.strip(target)

    def _raise_for_status(self, response: requests.Response, deadline: Deadline) -> None:
        status = response.status_code
        if status < 400:
            return
        shown = self._shown(response)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429:
                count(self.source.name, Metric.THROTTLED)
            inline_limit = min(self.source.retries.max_inline_wait_seconds, deadline.remaining())
            if retry_after is not None and retry_after > inline_limit:
                raise ParkMessageError(
                    f"{status} from {shown} with Retry-After {retry_after:.0f}s: parking the message",
                    delay_seconds=math.ceil(retry_after),
                )
            raise TransientHttpError(f"{status} from {shown}", status=status, retry_after=retry_after)
        raise PermanentHttpError(f"{status} from {shown}", status=status)

    def _read_capped(self, response: requests.Response) -> bytearray:
        """The body, in one buffer (a page is held once, not as chunks and a copy), refused past the limit."""
        limit = self.source.max_page_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PermanentHttpError(
                f"the response of {self._shown(response)} is {declared} bytes, over the {limit}-byte limit"
            )
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                if len(body) + len(chunk) > limit:
                    raise PermanentHttpError(f"the response of {self._shown(response)} is over the {limit}-byte limit")
                body += chunk
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientHttpError(
                f"the response of {self._shown(response)} broke off: {type(exc).__name__}"
            ) from None
        return body

    def _shown(self, response: requests.Response) -> str:
        return self.credentials.redact(response.url)


class _StopAtDeadline(stop_base):
    """Stop when the next wait would not end before the deadline (tenacity computes the wait first)."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self.deadline.remaining()


class VendorClients:
    """One :class:`VendorClient` per source for the life of a container: one pooled session, and a
    pacer per source that keeps its pace across invocations."""

    def __init__(
        self, session: requests.Session, credentials: CredentialStore, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._sleep = sleep
        self._clients: dict[str, VendorClient] = {}
        self._lock = threading.Lock()

    def for_source(self, source: Source) -> VendorClient:
        with self._lock:
            client = self._clients.get(source.name)
            if client is None or client.source != source:
                rate = source.budget.per_worker_rps
                client = VendorClient(
                    source,
                    self._session,
                    self._credentials.for_source(source),
                    pacer=Pacer(rate, sleep=self._sleep) if rate else None,
                    sleep=self._sleep,
                )
                self._clients[source.name] = client
            return client
