"""What the run report is made of, recorded page by page: the vendor client counts a page's requests and
429s, the worker writes them with the latency and the parks into the ledger's landed markers, and the
ledger reads markers written before those figures existed. And the worker built from its settings talks to
the AWS endpoint they name (the local stand-in under `sam local invoke`), where its markers go."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
import requests
from moto import mock_aws

from apilake.aws import default_clients, default_vendor_clients
from apilake.http import Deadline
from apilake.ingest import PageIngester
from apilake.ledger import LandedPage, Ledger, RunManifest, ShardPlan, SourcePlan
from apilake.messages import Parking, WorkItem
from apilake.pagination import PageRequest, VendorPage
from apilake.settings import WorkerSettings
from tests.conftest import ROOT
from tests.unit.fakes import NOW, Worker, document, item
from tests.unit.test_http import REQUEST, StubSession, client, response


@pytest.mark.parametrize(
    ("statuses", "attempts", "throttled"),
    [
        ([200], 1, 0),
        ([429, 200], 2, 1),
        ([503, 500, 200], 3, 0),
        ([429, 503, 429, 200], 4, 2),
    ],
)
def test_a_fetched_page_carries_its_requests_and_429s(statuses: list[int], attempts: int, throttled: int) -> None:
    # Given a vendor answering these statuses in turn
    vendor, _ = client(StubSession(*(response(status) for status in statuses)))
    # When the page is fetched
    page = vendor.fetch(REQUEST, Deadline.unbounded())
    # Then it says how many requests it took and how many were answered 429, and how long the last one took
    assert (page.attempts, page.throttled) == (attempts, throttled)
    assert page.latency_ms >= 0


def test_a_connection_error_counts_as_a_request() -> None:
    vendor, _ = client(StubSession(requests.ConnectionError("reset"), response(200)))
    assert vendor.fetch(REQUEST, Deadline.unbounded()).attempts == 2


@pytest.mark.parametrize(
    ("parking", "parks"),
    [
        (None, 0),
        (Parking(count=2, since=NOW - timedelta(hours=1), until=NOW - timedelta(seconds=5)), 2),
    ],
)
def test_the_landed_marker_holds_what_landing_the_page_took(
    monkeypatch: pytest.MonkeyPatch, parking: Parking | None, parks: int
) -> None:
    # Given a page (parked twice before, or never) that took three requests, one answered 429
    worker = Worker("fan")
    worker.vendor.answer("page=2", document(2))
    answered = worker.vendor.fetch

    def fetch(request: PageRequest, deadline: Deadline) -> VendorPage:
        return replace(answered(request, deadline), attempts=3, throttled=1, latency_ms=123.456)

    monkeypatch.setattr(worker.vendor, "fetch", fetch)
    # When it is delivered and lands
    assert worker.run(item("fan", 2).model_copy(update={"park": parking})) == []
    # Then its ledger entry has the requests, the 429s, the latency (0.1 ms) and the parks
    ((_, details),) = worker.ledger.landed[0]
    assert {k: details[k] for k in ("attempts", "throttled", "latency_ms", "parks")} == {
        "attempts": 3,
        "throttled": 1,
        "latency_ms": 123.5,
        "parks": parks,
    }


@mock_aws
def test_markers_written_before_the_request_figures_still_read() -> None:
    # Given a shard whose page 1 was recorded by an older worker and page 2 by this one
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    page = WorkItem(run_id="r1", source="api-a", ingestion_date=date(2026, 11, 26), shard="all", page=1)
    old = {"key": "k1", "sha256": "a" * 64, "records": 5, "bytes": 90, "written": True, "has_next": True}
    new = {
        **old,
        "fetched_at": "2026-11-26T01:00:03+00:00",
        "attempts": 2,
        "throttled": 1,
        "latency_ms": 8.5,
        "parks": 0,
    }
    ledger.mark_landed([(page, {**old, "fetched_at": "2026-11-26T01:00:01+00:00"})])
    ledger.mark_landed([(page.model_copy(update={"page": 2}), new)])
    manifest = RunManifest(
        run_id="r1",
        ingestion_date=date(2026, 11, 26),
        created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
        trigger="manual",
        sources={"api-a": SourcePlan(shards=[ShardPlan(shard="all", mode="chain")])},
    )
    # When the ledger reads them, with the pages' details
    landed = ledger.status(manifest, details=True).sources[0].shards[0].pages
    assert landed is not None
    # Then the old one reads with the figures unknown, the new one with its figures
    assert landed[1] == LandedPage(
        key="k1",
        sha256="a" * 64,
        records=5,
        bytes=90,
        written=True,
        has_next=True,
        fetched_at=datetime(2026, 11, 26, 1, 0, 1, tzinfo=UTC),
    )
    assert (landed[1].attempts, landed[1].throttled, landed[1].latency_ms, landed[1].parks) == (None, None, None, None)
    assert (landed[2].attempts, landed[2].throttled, landed[2].latency_ms, landed[2].parks) == (2, 1, 8.5, 0)


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    """The container's cached clients made anew in the test, and forgotten after it."""
    for cached in (default_clients, default_vendor_clients):
        cached.cache_clear()
    yield
    for cached in (default_clients, default_vendor_clients):
        cached.cache_clear()


@pytest.mark.usefixtures("fresh_clients")
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:4566"])
def test_the_worker_talks_to_the_aws_endpoint_its_settings_name(endpoint: str | None) -> None:
    # Given the worker's settings, with or without an endpoint for AWS
    settings = WorkerSettings(
        source="api-a",
        lake_bucket="lake",
        queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/apilake-dev-api-a",
        sources_file=str(ROOT / "layers" / "common" / "sources.yaml"),
        aws_endpoint_url=endpoint,
    )
    # When the ingester is built as the handler builds it
    ingester = PageIngester.for_settings(settings)
    # Then its ledger (S3) and its queue sender (SQS) go to that endpoint, or to AWS's own
    s3_endpoint = ingester.ledger.client.meta.endpoint_url  # type: ignore[attr-defined]
    sqs_endpoint = ingester.sender._sqs.meta.endpoint_url  # type: ignore[attr-defined]
    assert (s3_endpoint, sqs_endpoint) == (
        (endpoint, endpoint) if endpoint else ("https://s3.amazonaws.com", "https://sqs.us-east-1.amazonaws.com")
    )
