"""Reconciliation end to end in-process (decision 28): a vendor that caps the page size below the configured
one still lands every record; a page that comes back short before the last is reported, the run is not
complete, and an incremental source's mark stays where it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apilake.marks import MarkStore
from apilake_cli.output import print_status
from apilake_dev.vendors.fake import FakeVendor
from apilake_dev.vendors.uneven import UnevenDataset
from tests.integration.conftest import API_KEY, BUCKET, Harness, emulated_harness, source_configs

DAY = "2026-11-26"
DATASET_OF = {"capped-offsets": "ds-co", "capped-pages": "ds-cp", "short-page": "ds-sp", "inc": "ds-inc"}


def datasets() -> list[UnevenDataset]:
    """Made afresh for each test: a test may change what its vendor serves."""
    return [
        UnevenDataset("ds-co", total=95, cap=10),
        UnevenDataset("ds-cp", total=60, cap=7),
        UnevenDataset("ds-sp", total=45, short={2: 3}),
        UnevenDataset("ds-inc", total=38, short={2: 4}),
    ]


def served(h: Harness, source: str) -> UnevenDataset:
    dataset = h.vendor.state.datasets[DATASET_OF[source]]
    assert isinstance(dataset, UnevenDataset)
    return dataset


def configs(base_url: str) -> list[dict[str, Any]]:
    offsets = next(c for c in source_configs(base_url) if c["name"] == "offsets")
    page_number = {"type": "page_number", "page_size": 10, "total_path": "meta.total"}
    return [
        {
            **offsets,
            "name": "capped-offsets",
            "path": "/offset/ds-co",
            "pagination": {"type": "offset", "limit": 50, "total_path": "total"},
        },
        {
            **offsets,
            "name": "capped-pages",
            "path": "/page_number/ds-cp",
            "records_path": "data",
            "pagination": {**page_number, "page_size": 20},
        },
        {
            **offsets,
            "name": "short-page",
            "path": "/page_number/ds-sp",
            "records_path": "data",
            "pagination": page_number,
        },
        {
            **offsets,
            "name": "inc",
            "path": "/offset/ds-inc",
            "pagination": {"type": "offset", "limit": 10, "total_path": "total"},
            "incremental": {"cursor_path": "updated_at", "param": "updated_since", "initial_value": "2026-01-01"},
        },
    ]


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with (
        FakeVendor(list(datasets()), api_key=API_KEY) as vendor,
        emulated_harness(vendor, configs(vendor.base_url), tmp_path, monkeypatch) as built,
    ):
        yield built


def run(h: Harness, run_id: str, *sources: str) -> None:
    h.plan({"sources": list(sources), "run_id": run_id, "ingestion_date": DAY})
    for source in sources:
        h.drain(source)


@pytest.mark.parametrize(("source", "pages", "size"), [("capped-offsets", 10, 10), ("capped-pages", 9, 7)])
def test_a_vendor_that_caps_the_page_size_lands_every_record_and_reconciles(
    h: Harness, capsys: pytest.CaptureFixture[str], source: str, pages: int, size: int
) -> None:
    # Given a vendor that holds fewer records a page than configured (10 of 50, 7 of 20), and says nothing
    dataset = served(h, source)
    # When a run is planned and drained
    run(h, "r1", source)
    # Then the planner planned pages of the size the vendor really uses, and every record landed once
    ids = sorted(record["id"] for record in h.records(source))
    assert ids == [f"{dataset.name}-{n:07d}" for n in range(dataset.total)]
    # And status is complete with the records stated equal to those landed
    shard = h.status("r1").sources[0].shards[0]
    assert shard.complete and shard.capped and (shard.expected_pages, shard.page_size) == (pages, size)
    assert shard.expected_records == shard.landed_records == dataset.total and shard.unreconciled is None
    # And the status printed says so
    print_status(h.status("r1"), None)
    out = capsys.readouterr().out
    assert f"{pages}/{pages} pages, {dataset.total}/{dataset.total} records" in out
    assert f"the vendor caps the page size: planned with pages of {size}" in out
    assert "complete: yes" in out


def test_a_page_short_before_the_last_is_reported_and_the_run_is_not_complete(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a vendor whose page 2 (of 5) comes back with 7 records of 10, its total still 45
    run(h, "r1", "short-page")
    # Then every planned page landed, but the run is not complete: the page is flagged, the records differ
    status = h.status("r1")
    shard = status.sources[0].shards[0]
    assert shard.missing == [] and shard.landed_pages == 5
    assert not shard.complete and not status.complete and shard.short_pages == {2: 7}
    assert (shard.expected_records, shard.landed_records) == (45, 42)
    # And status prints the records and why they do not reconcile
    print_status(status, None)
    out = capsys.readouterr().out
    assert "complete: NO" in out and "short-page: INCOMPLETE" in out
    assert "5/5 pages, 42/45 records" in out
    assert (
        "records do not reconcile: page 2 holds 7 records, fewer than the page size 10, and is not the last; "
        "the vendor stated 45 records, 42 landed"
    ) in out


def test_a_run_that_does_not_reconcile_leaves_the_incremental_mark_alone(h: Harness) -> None:
    # Given an incremental source whose run landed every page, page 2 short
    marks = MarkStore(h.s3, BUCKET)
    run(h, "r1", "inc")
    assert not h.status("r1").complete and h.status("r1").sources[0].shards[0].missing == []
    # When the next run is planned (it settles the mark first)
    run(h, "r2", "inc")
    # Then the mark did not move: r1 did not reconcile (nor did r2, the vendor still short)
    assert marks.read("inc") == (None, None)
    # And once the vendor serves every record, a run reconciles and the next planning moves the mark
    served(h, "inc").short.clear()
    run(h, "r3", "inc")
    assert h.status("r3").complete
    h.plan({"sources": ["inc"], "run_id": "r4", "ingestion_date": DAY})
    mark, _etag = marks.read("inc")
    assert mark is not None and mark.run_id == "r3"
