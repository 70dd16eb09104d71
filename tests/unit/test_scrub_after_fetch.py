"""Errors raised after the fetch quote what the vendor said (a record's cursor value, a total that is no number):
they are scrubbed of the request's credentials too, in the worker (one place: around what follows the fetch)
and in the planner's probe, when the vendor echoes the API key there."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from apilake.auth import Credentials
from apilake.config import Source, parse_sources
from apilake.exceptions import PlanningError
from apilake.http import Deadline, VendorClient
from apilake.ledger import Ledger
from apilake.pagination import PageRequest, VendorPage
from apilake.planner import PlanRequest
from tests.unit import fakes
from tests.unit.fakes import FakeVendor, Worker, item
from tests.unit.test_http import StubSession, response
from tests.unit.test_planner import StubClient, aws, planner  # noqa: F401  (aws: the fixture)

KEY = "sk_live_51Hx9Echo"
CREDENTIALS = Credentials(headers={"X-Api-Key": KEY})
INCREMENTAL = {
    "name": "events",
    "base_url": "https://api.example.com",
    "path": "/events",
    "records_path": "data",
    "pagination": {"type": "single"},
    "incremental": {"cursor_path": "updated_at", "param": "since", "initial_value": "2026-01-01T00:00:00Z"},
}


class KeyedVendors(FakeVendor):
    """The container's vendor clients: a real client, sending the key, to a vendor that plays ``answers``."""

    def __init__(self, *answers: Any) -> None:
        super().__init__()
        self.session = StubSession(*(response(200, answer) for answer in answers))

    def for_source(self, source: Source) -> VendorClient:  # type: ignore[override]
        return VendorClient(source, self.session, CREDENTIALS, sleep=lambda _: None)


def test_a_cursor_value_echoing_the_key_fails_the_page_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an incremental source whose vendor puts an object echoing the caller's key where the cursor goes
    vendor = KeyedVendors({"data": [{"id": 1, "updated_at": {"echo": f"bad request from {KEY}"}}]})
    worker = Worker("events", vendor=vendor)
    monkeypatch.setattr(fakes, "SOURCES", parse_sources({"sources": [INCREMENTAL]}, "test"))
    # When its page is ingested
    failed = worker.run(item("events", 1))
    # Then the page failed with the vendor's words, the key replaced by ***, in the ledger's note too
    assert failed == [1]
    reason = worker.ledger.failures[1]["reason"]
    assert reason == (
        "incremental cursor at 'updated_at' of a record: expected an ISO 8601 timestamp, got dict "
        "{'echo': 'bad request from ***'}"
    )
    assert vendor.session.calls[0]["headers"]["X-Api-Key"] == KEY  # the key was sent, and is nowhere after


class EchoingProbe(StubClient):
    """The planner's probe: a total that is the caller's key (a vendor echoing it), the page carrying its scrub."""

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        self.requests.append(request)
        document = {"total": f"key {KEY} has no total", "data": []}
        return VendorPage(document, {}, request.url, 0, 0.0, scrub=CREDENTIALS.scrub)


def test_a_total_echoing_the_key_fails_the_probe_without_the_key(aws: Any) -> None:  # noqa: F811
    s3, _sqs, _urls = aws
    with pytest.raises(PlanningError) as raised:
        planner(aws, EchoingProbe(0)).plan(PlanRequest("r1", date(2026, 11, 26), "manual"), Deadline.unbounded())
    manifest = Ledger(s3, "lake").read_manifest("r1")
    assert manifest is not None
    error = str(manifest.sources["fan"].shards[0].error)
    assert error == "probe failed: total is not a non-negative whole number: 'key *** has no total'"
    assert KEY not in str(raised.value)


def test_a_page_without_credentials_is_quoted_as_it_is() -> None:
    assert VendorPage({}, {}, "https://api.example.com", 0, 0.0).scrub(f"echo {KEY}") == f"echo {KEY}"
