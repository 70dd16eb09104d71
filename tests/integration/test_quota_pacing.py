"""A vendor that says how much of its rate limit is left (in each header style) is not run into: with no
budget configured, the workers pace themselves by its headers and land every record without a 429."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from apilake_dev.vendors.fake import Dataset
from apilake_dev.vendors.quota_limited import HeaderStyle, QuotaVendor
from tests.integration.conftest import API_KEY, emulated_harness, source_configs

DAY = date(2026, 11, 26)
LIMIT, WINDOW_SECONDS = 8, 1.0  # the vendor's fixed window
CONTROL_LIMIT = 2
PAGES, PAGE_SIZE = 16, 5


def unbudgeted_source(base_url: str) -> dict[str, Any]:
    cursor = next(c for c in source_configs(base_url) if c["pagination"]["type"] == "cursor")
    config = {**cursor, "name": "quota", "path": "/page_number/ds-q", "records_path": "data"}
    config["pagination"] = {"type": "page_number", "page_size": PAGE_SIZE, "total_path": "meta.total"}
    config["params"] = {}
    config.pop("budget", None)  # no budget: the vendor's headers alone pace the source
    return config


@pytest.mark.parametrize(
    ("style", "limit", "paced"),
    [("ietf", LIMIT, True), ("ietf-draft", LIMIT, True), ("github", LIMIT, True), ("none", CONTROL_LIMIT, False)],
)
def test_the_vendors_rate_limit_headers_pace_a_source_with_no_budget(
    style: HeaderStyle, limit: int, paced: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a vendor allowing 8 requests a second that says so in its headers (or, for contrast, one allowing 2
    # that says nothing: slower than the drain even on a loaded machine)
    dataset = Dataset("ds-q", total=PAGES * PAGE_SIZE)
    limits = {"ds-q": (limit, WINDOW_SECONDS)}
    with QuotaVendor([dataset], limits, style, api_key=API_KEY) as vendor:
        with emulated_harness(vendor, [unbudgeted_source(vendor.base_url)], tmp_path, monkeypatch) as harness:
            # When a run of a source with no configured budget is planned and drained
            harness.plan({"sources": ["quota"], "run_id": f"quota-{style}", "ingestion_date": DAY.isoformat()})
            stats = harness.drain("quota")
            # Then every record lands exactly once
            assert stats.failed == 0 and stats.handler_errors == []
            ids = [record["id"] for record in harness.records("quota")]
            assert sorted(ids) == sorted(record["id"] for record in dataset.records(None, None))
            assert len(ids) == len(set(ids)) == PAGES * PAGE_SIZE
        # And a vendor that says how much is left is never run into; one that says nothing is
        if paced:
            assert vendor.state.limited["ds-q"] == 0
        else:
            assert vendor.state.limited["ds-q"] > 0
