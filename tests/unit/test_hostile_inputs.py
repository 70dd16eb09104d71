"""Hostile vendor answers (bodies nested too deep, stacked encodings, endless Retry-After, a body or
head sent a byte at a time) end as the project's retryable or permanent errors, with a reason.

The byte-at-a-time answers need a real socket: they are played by the fake vendor on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from apilake import records as records_module
from apilake.auth import Credentials
from apilake.config import Source, parse_sources
from apilake.exceptions import BadResponseError, ParkMessageError, PermanentHttpError, TransientHttpError
from apilake.http import MAX_RETRY_AFTER_SECONDS, Deadline, VendorClient, new_session, parse_retry_after
from apilake.messages import WorkItem
from apilake.pagination import PageRequest, VendorPage, paginator_for
from apilake.records import MAX_DEPTH, NestingError, parse_document
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault
from tests.unit.test_http import StubSession, response

DATASET = Dataset("ds-h", total=40)


def nested(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def source_for(base_url: str, **overrides: Any) -> Source:
    raw = {
        "name": "api-h",
        "base_url": base_url,
        "path": "/single/ds-h",
        "records_path": "records",
        "pagination": {"type": "single"},
        "retries": {"max_attempts": 1},
        "timeouts": {"connect_seconds": 2, "read_seconds": 0.5},
        **overrides,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-h")


# -- JSON nested deeper than anything reads back -----------------------------------------------------


@pytest.fixture(params=["whole", "lazy"])
def parsing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: a page parsed whole, and a large page whose records are parsed one at a time."""
    if request.param == "lazy":
        monkeypatch.setattr(records_module, "LAZY_ABOVE_BYTES", 0)
    return str(request.param)


@pytest.mark.parametrize(
    "text",
    [
        nested(200_000),
        '{"data": [' + nested(200_000) + "]}",
        '{"data": [1, {"a": ' + nested(MAX_DEPTH - 2) + "}]}",
        '{"meta": ' + nested(MAX_DEPTH) + ', "data": []}',
        '{"data": [' + "{" * 200_000,
    ],
    ids=["200,000 deep", "a record 200,000 deep", "a record one level too deep", "beside the records", "unclosed"],
)
def test_json_nested_deeper_than_the_limit_is_refused(parsing: str, text: str) -> None:
    with pytest.raises(NestingError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_document(text.encode(), "data")


@pytest.mark.parametrize(
    "text",
    [
        '{"data": [1, {"a": ' + nested(MAX_DEPTH - 3) + "}]}",
        '{"data": ["' + "[" * 5000 + '", "' + "{" * 5000 + '"]}',
        '{"data": ["\\\\", "\\"' + "[" * 5000 + '"], "n": "\\\\\\""}',
        '{"data": [{"' + "[" * 5000 + '": "]]"}]}',
    ],
    ids=["at the limit", "brackets in strings", "escaped quotes and backslashes", "brackets in keys"],
)
def test_json_within_the_limit_reads_as_before(parsing: str, text: str) -> None:
    document = parse_document(text.encode(), "data")
    assert list(document["data"]) == json.loads(text)["data"]


def test_json_nested_too_deep_is_a_permanent_error_with_its_reason() -> None:
    session = StubSession(response(200, raw=nested(200_000).encode(), headers={"Content-Type": "application/json"}))
    vendor = VendorClient(source_for("https://api.example.com"), session, Credentials())
    with pytest.raises(BadResponseError, match=f"is JSON nested deeper than {MAX_DEPTH} levels"):
        vendor.fetch(PageRequest("https://api.example.com/single/ds-h"), Deadline.unbounded())


# -- headers: Retry-After and Content-Length ----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("9" * 400, MAX_RETRY_AFTER_SECONDS),
        ("9" * 5000, MAX_RETRY_AFTER_SECONDS),
        ("86400", MAX_RETRY_AFTER_SECONDS),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
        ("\u00b2", None),
        ("\u0663", None),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
    ],
    ids=["400 digits", "5000 digits", "a day", "year 9999", "superscript two", "arabic-indic three", "year 99999"],
)
def test_a_retry_after_is_capped_or_ignored_never_a_crash(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_a_retry_after_of_400_digits_parks_the_message_for_the_longest_sqs_allows() -> None:
    session = StubSession(response(429, headers={"Retry-After": "9" * 400}))
    vendor = VendorClient(source_for("https://api.example.com"), session, Credentials())
    with pytest.raises(ParkMessageError, match="Retry-After 43200s") as raised:
        vendor.fetch(PageRequest("https://api.example.com/single/ds-h"), Deadline.unbounded())
    assert raised.value.delay_seconds == MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize("declared", ["9" * 5000, "\u00b2", "-1", "12, 12"])
def test_a_content_length_that_is_not_a_number_is_no_crash(declared: str) -> None:
    body = b'{"records": [1]}'
    session = StubSession(response(200, raw=body, headers={"Content-Length": declared}))
    vendor = VendorClient(source_for("https://api.example.com"), session, Credentials())
    request = PageRequest("https://api.example.com/single/ds-h")
    if declared.isascii() and declared.isdigit():
        with pytest.raises(PermanentHttpError, match="over the"):
            vendor.fetch(request, Deadline.unbounded())
    else:
        assert vendor.fetch(request, Deadline.unbounded()).document == {"records": [1]}


# -- over a real socket: encodings, and answers sent a byte at a time ---------------------------------


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor([DATASET]) as fake:
        yield fake


def client_for(vendor: FakeVendor, **overrides: Any) -> VendorClient:
    return VendorClient(source_for(vendor.base_url, **overrides), new_session(), Credentials())


def fetch_from(vendor: FakeVendor, client: VendorClient | None = None, deadline: Deadline | None = None) -> Any:
    client = client or client_for(vendor)
    return client.fetch(PageRequest(client.source.url), deadline or Deadline.unbounded()).document


def test_more_stacked_content_encodings_than_urllib3_decodes_is_a_permanent_error(vendor: FakeVendor) -> None:
    vendor.inject("single", "ds-h", 1, Fault("encodings"))
    # (a whole-response limit that a loaded machine cannot reach: the decoding is what is tested)
    roomy = client_for(vendor, timeouts={"connect_seconds": 2, "read_seconds": 10})
    with pytest.raises(PermanentHttpError, match=r"could not be decoded \(Content-Encoding 'gzip, gzip, gzip"):
        fetch_from(vendor, roomy)


def test_json_nested_200000_deep_from_the_vendor_is_a_permanent_error(vendor: FakeVendor) -> None:
    vendor.inject("single", "ds-h", 1, Fault("deep_json"))
    with pytest.raises(BadResponseError, match=f"nested deeper than {MAX_DEPTH} levels"):
        fetch_from(vendor)


@pytest.mark.parametrize("kind", ["drip", "drip_headers"], ids=["body", "status line and headers"])
def test_an_answer_sent_a_byte_at_a_time_is_cut_off_at_the_whole_response_limit(vendor: FakeVendor, kind: Any) -> None:
    # Given an answer of a few KB that comes a byte every 20 ms: each read gets something within the
    # read timeout (0.5 s), and the whole would take over a minute
    vendor.inject("single", "ds-h", 1, Fault(kind, delay_seconds=0.02))
    client = client_for(vendor)
    started = time.monotonic()
    # When the page is fetched
    with pytest.raises(TransientHttpError, match=r"took longer than 0\.5s, the limit for a whole response"):
        fetch_from(vendor, client)
    # Then it was cut off at the read timeout, taken as the limit for the whole response
    assert time.monotonic() - started < 2.0
    # And the next answer, sent whole, is read as usual (the cut connection is not reused)
    assert len(fetch_from(vendor, client)["records"]) == DATASET.total


def test_the_whole_response_limit_is_bounded_by_the_time_left_in_the_invocation(vendor: FakeVendor) -> None:
    vendor.inject("single", "ds-h", 1, Fault("drip", delay_seconds=0.02))
    started = time.monotonic()
    with pytest.raises(TransientHttpError, match=r"took longer than 0\.3s"):
        fetch_from(vendor, client_for(vendor, timeouts={"read_seconds": 30}), Deadline(lambda: 300, 0.0))
    assert time.monotonic() - started < 1.5


def test_a_slow_answer_within_the_limit_is_read(vendor: FakeVendor) -> None:
    vendor.inject("single", "ds-h", 1, Fault("slow", delay_seconds=0.2))
    assert len(fetch_from(vendor)["records"]) == DATASET.total


# -- what the next page is: a cursor or a URL that a work item cannot carry ---------------------------


def page_of(document: Any, headers: dict[str, str] | None = None) -> VendorPage:
    return VendorPage(document, headers or {}, "https://api.example.com/things", 10, 1.0)


ITEM = WorkItem(run_id="r1", source="api-h", ingestion_date=date(2026, 11, 26), shard="all", page=3)


@pytest.mark.parametrize(
    ("pagination", "page", "reason"),
    [
        (
            {"type": "next_url", "next_url_path": "next"},
            page_of({"data": [], "next": "https://[::1/x"}),
            "not a URL that can be read",
        ),
        ({"type": "link_header"}, page_of([], {"Link": '<https://[::1/x>; rel="next"'}), "not a URL that can be read"),
        (
            {"type": "next_url", "next_url_path": "next"},
            page_of({"data": [], "next": "/things?page=" + "9" * 5000}),
            "characters long, more than the 4096 a work item carries",
        ),
        (
            {"type": "cursor", "cursor_path": "next"},
            page_of({"data": [], "next": "c" * 5000}),
            "characters long, more than the 4096 a work item carries",
        ),
    ],
    ids=["next URL, invalid", "Link, invalid", "next URL, too long", "cursor, too long"],
)
def test_a_next_page_a_work_item_cannot_carry_is_a_permanent_error(
    pagination: dict[str, Any], page: VendorPage, reason: str
) -> None:
    source = source_for("https://api.example.com", pagination=pagination, records_path="data")
    with pytest.raises(BadResponseError, match=reason):
        paginator_for(source).next_page(ITEM, page, [1])
