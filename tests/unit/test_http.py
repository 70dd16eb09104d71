"""The vendor client's retry policy, Retry-After handling, redirects and size cap, against a stub session."""

from __future__ import annotations

import http.client
import io
import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from apilake.auth import Credentials
from apilake.config import Source, parse_sources
from apilake.exceptions import BadResponseError, ParkMessageError, PermanentHttpError, TransientHttpError
from apilake.http import Deadline, VendorClient, parse_retry_after
from apilake.ingest import request_fingerprint
from apilake.messages import WorkItem
from apilake.observability import Metric, totals
from apilake.pagination import PageRequest, paginator_for

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_is_read_in_both_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    payload = raw if raw is not None else json.dumps(body if body is not None else {"data": []}).encode()
    resp.raw = io.BytesIO(payload)
    resp.headers = CaseInsensitiveDict(headers or {})
    resp.url = "https://api.example.com/things?page=1"
    return resp


class StubSession(requests.Session):
    """Plays the given responses (or raises the given exceptions) in order and records what was sent:
    requests are prepared as a real session prepares them, and never leave the process."""

    def __init__(self, *outcomes: requests.Response | Exception) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.calls: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.calls.append({"url": request.url, "headers": request.headers, **kwargs})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def make_source(**retries: Any) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/things",
        "records_path": "data",
        "pagination": {"type": "single"},
        "retries": {"max_attempts": 4, "base_delay_seconds": 1, "max_delay_seconds": 8, **retries},
        "max_page_bytes": 2048,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def client(
    session: StubSession, credentials: Credentials | None = None, **retries: Any
) -> tuple[VendorClient, list[float]]:
    slept: list[float] = []
    vendor = VendorClient(
        make_source(**retries),
        session,
        credentials or Credentials(),
        sleep=slept.append,
        jitter=lambda low, high: high,  # the ceiling of full jitter, to make waits predictable
    )
    return vendor, slept


REQUEST = PageRequest("https://api.example.com/things", {"page": "1"})


def test_429_and_5xx_are_retried_with_exponential_backoff_then_succeed() -> None:
    # Given a vendor that fails three times before answering
    session = StubSession(response(503), response(500), response(429), response(200, {"data": [1]}))
    vendor, slept = client(session)
    # When the page is fetched
    page = vendor.fetch(REQUEST, Deadline.unbounded())
    # Then it took four attempts, waiting 1, 2, 4 seconds (full jitter's ceiling) in between
    assert page.document == {"data": [1]}
    assert slept == [1.0, 2.0, 4.0]


def test_retry_after_seconds_is_honoured_instead_of_backoff() -> None:
    session = StubSession(response(429, headers={"Retry-After": "3"}), response(200))
    vendor, slept = client(session)
    vendor.fetch(REQUEST, Deadline.unbounded())
    assert slept == [3.0]


def test_retry_after_is_capped_by_max_delay() -> None:
    session = StubSession(response(503, headers={"Retry-After": "12"}), response(200))
    vendor, slept = client(session, max_inline_wait_seconds=60)
    vendor.fetch(REQUEST, Deadline.unbounded())
    assert slept == [8.0]


def test_a_long_retry_after_parks_the_message_instead_of_sleeping() -> None:
    session = StubSession(response(429, headers={"Retry-After": "120"}))
    vendor, slept = client(session)
    with pytest.raises(ParkMessageError) as raised:
        vendor.fetch(REQUEST, Deadline.unbounded())
    assert raised.value.delay_seconds == 120
    assert slept == []


def test_a_retry_after_past_the_remaining_time_parks_the_message() -> None:
    session = StubSession(response(429, headers={"Retry-After": "10"}))
    vendor, _ = client(session)
    with pytest.raises(ParkMessageError):
        vendor.fetch(REQUEST, Deadline(lambda: 8_000, 0.0))


def test_no_wait_is_started_past_the_remaining_time() -> None:
    # Given 2.5 s left: the first wait (1 s) fits, the second (2 s) does not
    remaining_ms = [2_500]
    session = StubSession(response(503), response(503), response(200))
    vendor, slept = client(session)

    def sleep_and_run_down(seconds: float) -> None:
        slept.append(seconds)
        remaining_ms[0] -= int(seconds * 1000)

    vendor._sleep = sleep_and_run_down
    with pytest.raises(TransientHttpError, match="503"):
        vendor.fetch(REQUEST, Deadline(lambda: remaining_ms[0], 0.0))
    assert slept == [1.0]


def test_attempts_are_bounded() -> None:
    session = StubSession(*(response(502) for _ in range(4)))
    vendor, slept = client(session)
    with pytest.raises(TransientHttpError, match="502"):
        vendor.fetch(REQUEST, Deadline.unbounded())
    assert len(session.calls) == 4 and len(slept) == 3


@pytest.mark.parametrize(
    "error", [requests.ConnectTimeout("boom"), requests.ReadTimeout("slow"), requests.ConnectionError("reset")]
)
def test_connection_errors_and_timeouts_are_retried(error: Exception) -> None:
    session = StubSession(error, response(200))
    vendor, slept = client(session)
    assert vendor.fetch(REQUEST, Deadline.unbounded()).document == {"data": []}
    assert len(slept) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_permanent_and_not_retried(status: int) -> None:
    session = StubSession(response(status))
    vendor, slept = client(session)
    with pytest.raises(PermanentHttpError, match=str(status)):
        vendor.fetch(REQUEST, Deadline.unbounded())
    assert slept == []


def test_a_body_that_is_not_json_is_permanent() -> None:
    session = StubSession(
        response(200, raw=b"<html>down for maintenance</html>", headers={"Content-Type": "text/html"})
    )
    vendor, _ = client(session)
    with pytest.raises(BadResponseError, match=r"not JSON \(text/html"):
        vendor.fetch(REQUEST, Deadline.unbounded())


def test_a_body_over_the_size_limit_is_refused() -> None:
    session = StubSession(response(200, raw=b"[" + b"1," * 2000 + b"1]"))
    vendor, _ = client(session)
    with pytest.raises(PermanentHttpError, match="over the 2048-byte limit"):
        vendor.fetch(REQUEST, Deadline.unbounded())


def test_a_redirect_to_another_host_is_refused() -> None:
    session = StubSession(response(302, headers={"Location": "https://elsewhere.example.net/things"}))
    vendor, _ = client(session)
    with pytest.raises(PermanentHttpError, match=r"redirect \(302\) to https://elsewhere.example.net refused"):
        vendor.fetch(REQUEST, Deadline.unbounded())


def test_a_redirect_on_the_same_host_is_followed() -> None:
    session = StubSession(response(301, headers={"Location": "/v2/things?page=1"}), response(200, {"data": [2]}))
    vendor, _ = client(session)
    assert vendor.fetch(REQUEST, Deadline.unbounded()).document == {"data": [2]}
    assert session.calls[1]["url"] == "https://api.example.com/v2/things?page=1"


def test_requests_go_out_with_timeouts_credentials_and_no_automatic_redirects() -> None:
    session = StubSession(response(200))
    vendor, _ = client(session, credentials=Credentials(headers={"X-Api-Key": "k"}, params={"token": "t"}))
    vendor.fetch(REQUEST, Deadline.unbounded())
    call = session.calls[0]
    assert call["timeout"] == (3.05, 30.0)
    assert call["allow_redirects"] is False
    assert call["headers"]["X-Api-Key"] == "k"
    assert call["url"] == "https://api.example.com/things?page=1&token=t"


def scalar_source(per_page: Any, expand: Any, version: Any) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/things",
        "params": {"per_page": per_page, "expand": expand, "min": 0.0000001},
        "headers": {"X-Api-Version": version},
        "records_path": "data",
        "pagination": {"type": "single"},
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def test_scalars_in_params_and_headers_go_out_as_the_vendor_expects() -> None:
    # given a source with an integer, a boolean and a float in its params and an integer header
    source = scalar_source(200, True, 2)
    request = paginator_for(source).request(
        WorkItem(run_id="r1", source="api-x", ingestion_date=date(2026, 11, 26), shard="all", page=1)
    )
    session = StubSession(response(200))
    # when the page is fetched
    VendorClient(source, session, Credentials(), sleep=lambda _: None).fetch(request, Deadline.unbounded())
    # then the request carries their text: decimal, lowercase, no exponent
    call = session.calls[0]
    assert call["url"] == "https://api.example.com/things?per_page=200&expand=true&min=0.0000001"
    assert call["headers"]["X-Api-Version"] == "2"
    # and the request is the one a config with the same values quoted asks for
    quoted = paginator_for(scalar_source("200", "true", "2")).request(
        WorkItem(run_id="r1", source="api-x", ingestion_date=date(2026, 11, 26), shard="all", page=1)
    )
    assert request_fingerprint(request) == request_fingerprint(quoted)


def test_query_credentials_never_appear_in_errors() -> None:
    failing = response(404)
    failing.url = "https://api.example.com/things?page=1&token=s3cr3t"
    session = StubSession(failing)
    vendor, _ = client(session, credentials=Credentials(params={"token": "s3cr3t"}))
    with pytest.raises(PermanentHttpError) as raised:
        vendor.fetch(REQUEST, Deadline.unbounded())
    assert "s3cr3t" not in str(raised.value)
    assert "token=***" in str(raised.value)


def test_retries_and_throttles_are_counted() -> None:
    before = (totals.get("api-x", Metric.RETRIES), totals.get("api-x", Metric.THROTTLED))
    session = StubSession(response(429, headers={"Retry-After": "1"}), response(503), response(200))
    vendor, _ = client(session)
    vendor.fetch(REQUEST, Deadline.unbounded())
    assert totals.get("api-x", Metric.RETRIES) - before[0] == 2
    assert totals.get("api-x", Metric.THROTTLED) - before[1] == 1


KEY = "k3y-s3cr3t"


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (ValueError(f"Invalid header value b'{KEY}\\n'"), PermanentHttpError, "could not be made: ValueError"),
        (
            UnicodeEncodeError("latin-1", KEY + "\u20ac", 10, 11, "ordinal not in range(256)"),
            PermanentHttpError,
            "could not be made: UnicodeEncodeError",
        ),
        (requests.exceptions.InvalidHeader(f"bad header value: {KEY!r}"), PermanentHttpError, "InvalidHeader"),
        (requests.exceptions.InvalidURL(f"https://x?key={KEY}"), PermanentHttpError, "InvalidURL"),
        (requests.exceptions.TooManyRedirects(KEY), PermanentHttpError, "TooManyRedirects"),
        (requests.exceptions.ContentDecodingError(KEY), PermanentHttpError, "could not be decoded"),
        (requests.exceptions.ChunkedEncodingError(KEY), TransientHttpError, "broke off: ChunkedEncodingError"),
        (requests.exceptions.SSLError(KEY), TransientHttpError, "connection error calling"),
        (requests.RequestException(KEY), PermanentHttpError, "could not be made: RequestException"),
        (http.client.RemoteDisconnected(KEY), TransientHttpError, "connection error calling"),
        (urllib3.exceptions.ProtocolError(KEY), TransientHttpError, "connection error calling"),
        (ConnectionResetError(104, KEY), TransientHttpError, "connection error calling"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_every_error_of_the_http_layer_is_classified_and_never_quotes_its_text(
    error: Exception, kind: type[Exception], reason: str
) -> None:
    # Given an HTTP layer that fails with an exception whose own text quotes the key
    session = StubSession(*(error for _ in range(4)))
    vendor, _ = client(session, credentials=Credentials(headers={"X-Api-Key": KEY}, params={"key": KEY}))
    # When the page is fetched
    with pytest.raises(kind) as raised:
        vendor.fetch(REQUEST, Deadline.unbounded())
    # Then it is the project's retryable or permanent error, with a reason and without the key anywhere
    assert reason in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert KEY not in str(raised.value)
    # (a retryable one was retried, a permanent one was not)
    assert len(session.calls) == (4 if kind is TransientHttpError else 1)


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.example.net/things?page=2",
        "http://api.example.com/things?page=2",
        "https://api.example.com:8443/things?page=2",
        "https://api.example.com.elsewhere.example.net/things",
        "https://api.example.com@elsewhere.example.net/things",
        "https://elsewhere.example.net\\@api.example.com/things",
        "ftp://api.example.com/things",
    ],
    ids=["host", "scheme", "port", "suffix", "user info", "backslash", "ftp"],
)
def test_a_request_for_another_origin_is_refused_before_it_is_sent(url: str) -> None:
    # Given a work item whose URL cursor points elsewhere (a queued message, an edited DLQ message redriven)
    session = StubSession(response(200))
    vendor, _ = client(session, credentials=Credentials(headers={"Authorization": f"Bearer {KEY}"}))
    # When its page is fetched
    with pytest.raises(PermanentHttpError) as raised:
        vendor.fetch(PageRequest(url), Deadline.unbounded())
    # Then nothing was sent, and the error names the source and what it refused, not the credential
    assert session.calls == []
    assert "source 'api-x' may only call https://api.example.com: refused to send a request to " in str(raised.value)
    assert KEY not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["https://api.example.com/things?page=2", "HTTPS://API.Example.COM:443/v2/things", "https://api.example.com"]
)
def test_a_request_for_the_sources_origin_goes_out(url: str) -> None:
    session = StubSession(response(200))
    vendor, _ = client(session)
    vendor.fetch(PageRequest(url), Deadline.unbounded())
    assert len(session.calls) == 1


def test_the_origin_is_checked_on_the_url_as_sent() -> None:
    # urllib.parse reads the host of this URL as api.example.com, requests (urllib3) as elsewhere.example.net
    session = StubSession(response(200))
    vendor, _ = client(session)
    with pytest.raises(PermanentHttpError, match=r"refused to send a request to https://elsewhere\.example\.net$"):
        vendor.fetch(PageRequest("https://elsewhere.example.net\\@api.example.com/"), Deadline.unbounded())
    assert session.calls == []


@pytest.mark.parametrize(
    "url", ["//elsewhere.example.net/things", "https://[::1/things?key={KEY}", "things?page=2&key={KEY}"]
)
def test_a_request_url_that_cannot_be_read_is_refused_before_it_is_sent(url: str) -> None:
    session = StubSession(response(200))
    vendor, _ = client(session, credentials=Credentials(params={"key": KEY}))
    with pytest.raises(PermanentHttpError, match="could not be made") as raised:
        vendor.fetch(PageRequest(url.format(KEY=KEY)), Deadline.unbounded())
    assert session.calls == []
    assert KEY not in str(raised.value)
