"""Two sources of one budget group against one vendor: all their workers together stay within the group's rate.

Each worker is what a Lambda container is to the pacer: its own VendorClients (its own pacer per source), here
a thread calling as fast as its pacer lets it, MaximumConcurrency of them per source."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest
import requests

from apilake.auth import CredentialStore
from apilake.config import Source, parse_sources
from apilake.http import Deadline, VendorClients
from apilake.messages import WorkItem
from apilake.pagination import paginator_for
from apilake_dev.vendors.fake import Dataset, FakeVendor

GROUP_RPS = 8
REQUESTS_PER_WORKER = 6
# Timing jitter allowed on the vendor's side (a request arrives at its pacer's slot plus the latency).
TOLERANCE = 1.03


def sources_file(base_url: str, grouped: bool) -> list[Source]:
    """``orders`` (3 workers) and ``refunds`` (2 workers) on one vendor; grouped, they share GROUP_RPS."""

    def source(name: str, workers: int) -> dict[str, Any]:
        budget: dict[str, Any] = {"max_concurrency": workers}
        budget.update({"group": "shop"} if grouped else {"requests_per_second": GROUP_RPS})
        return {
            "name": name,
            "base_url": base_url,
            "path": f"/single/{name}",
            "records_path": "records",
            "pagination": {"type": "single"},
            "budget": budget,
        }

    document = {
        "budget_groups": {"shop": {"requests_per_second": GROUP_RPS}},
        "sources": [source("orders", 3), source("refunds", 2)],
    }
    return parse_sources(document, "sources.yaml").sources


def run_workers(sources: list[Source]) -> None:
    """MaximumConcurrency workers per source, each with its own pacer, REQUESTS_PER_WORKER requests each."""
    errors: list[BaseException] = []

    def worker(source: Source) -> None:
        try:
            with requests.Session() as session:
                client = VendorClients(session, CredentialStore(None)).for_source(source)
                paginator = paginator_for(source)
                item = WorkItem(run_id="r", source=source.name, ingestion_date=date(2026, 11, 26), shard="all", page=1)
                for _ in range(REQUESTS_PER_WORKER):
                    client.fetch(paginator.request(item), Deadline.unbounded())
        except Exception as exc:  # reported by the test
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(source,))
        for source in sources
        for _ in range(source.budget.max_concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []


def sustained_rate(times: list[float], workers: int) -> float:
    """Requests a second from the first to the last arrival, the first request of each worker aside: every
    worker's first request goes at once (a pacer spaces requests, it starts with none to space), the others at
    its pace."""
    times = sorted(times)
    return (len(times) - workers) / (times[-1] - times[0])


@pytest.mark.parametrize(("grouped", "within"), [(True, True), (False, False)], ids=["grouped", "own budgets"])
def test_the_workers_of_a_group_stay_within_its_rate_across_both_endpoints(grouped: bool, within: bool) -> None:
    with FakeVendor([Dataset("orders", total=3), Dataset("refunds", total=3)]) as vendor:
        # Given two sources on one vendor: in one group of 8 req/s, or each with 8 req/s of its own
        sources = sources_file(vendor.base_url, grouped)
        # When all their workers (3 + 2) call as fast as their pacers let them
        run_workers(sources)
        served = vendor.state.served_at
        assert [len(served["orders"]), len(served["refunds"])] == [3 * REQUESTS_PER_WORKER, 2 * REQUESTS_PER_WORKER]
    # Then grouped, the vendor sees no more than the group's rate, counting both endpoints; each source with the
    # group's rate of its own (the control), it sees well over it
    rate = sustained_rate(served["orders"] + served["refunds"], workers=5)
    if within:
        assert GROUP_RPS * 0.8 <= rate <= GROUP_RPS * TOLERANCE, f"{rate:.2f} req/s"
    else:
        assert rate >= GROUP_RPS * 1.5, f"{rate:.2f} req/s"
