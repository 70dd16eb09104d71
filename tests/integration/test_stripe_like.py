"""A Stripe-like list end to end in-process: ``has_more`` and ``starting_after=<id of the last record>``
(``cursor_from: last_record``), each page's cursor taken from the page before it."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from apilake.lake import page_key
from apilake_dev.vendors.stripe_like import StripeLikeDataset, StripeLikeVendor
from tests.integration.conftest import API_KEY, emulated_harness, source_configs

SOURCE = "customers"
RUN = "stripe-1"
DAY = date(2026, 11, 26)


@pytest.mark.parametrize(("total", "limit", "pages"), [(47, 10, 5), (40, 10, 4), (3, 100, 1), (0, 10, 1)])
def test_a_stripe_like_list_lands_every_record_exactly_once(
    total: int, limit: int, pages: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a vendor listing customers as Stripe does, and a source taking the cursor from the last record
    dataset = StripeLikeDataset("ds-cus", total=total)
    with StripeLikeVendor([dataset], api_key=API_KEY) as vendor:
        cursors = next(c for c in source_configs(vendor.base_url) if c["pagination"]["type"] == "cursor")
        config = {
            **cursors,
            "name": SOURCE,
            "path": "/cursor/ds-cus",
            "params": {"limit": str(limit)},
            "records_path": "data",
            "pagination": {
                "type": "cursor",
                "cursor_param": "starting_after",
                "cursor_from": "last_record",
                "cursor_field": "id",
                "has_more_path": "has_more",
            },
        }
        with emulated_harness(vendor, [config], tmp_path, monkeypatch) as harness:
            # When the run is planned and the source's queue drained
            harness.plan({"sources": [SOURCE], "run_id": RUN, "ingestion_date": DAY.isoformat()})
            stats = harness.drain(SOURCE)
            # Then every page lands once, and the records are the vendor's, each exactly once, in order
            assert stats.failed == 0 and stats.handler_errors == []
            assert harness.keys(SOURCE) == [page_key(SOURCE, DAY, "all", page) for page in range(1, pages + 1)]
            assert [r["id"] for r in harness.records(SOURCE)] == [r["id"] for r in dataset.records(None, None)]
            assert harness.dlq_bodies(SOURCE) == []
            # And each page after the first asked to start after the last id of the page before it
            asked = [parse_qs(urlsplit(url).query).get("starting_after", [None])[0] for url in vendor.state.seen_urls]
            ids = [r["id"] for r in dataset.records(None, None)]
            assert asked == [None, *(ids[page * limit - 1] for page in range(1, pages))]
