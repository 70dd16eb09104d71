"""Incremental sources end to end in-process: the planner settles the mark and asks for what changed, the
workers note each page's highest cursor value, the vendor's records change between runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from apilake.marks import MarkStore
from apilake_cli.redrive import redrive
from apilake_dev.vendors.changing import ChangingDataset
from apilake_dev.vendors.fake import FakeVendor, Fault
from tests.integration.conftest import API_KEY, BUCKET, Harness, emulated_harness, source_configs

SOURCE = "inc"
LIMIT = 10
INITIAL = "2026-01-01T00:00:00Z"
CHANGED_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def changing() -> ChangingDataset:
    return ChangingDataset("ds-inc", total=45, after_param="updated_since")


@pytest.fixture
def inc(changing: ChangingDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with FakeVendor([changing], api_key=API_KEY) as vendor:
        offsets = next(c for c in source_configs(vendor.base_url) if c["name"] == "offsets")
        config = {
            **offsets,
            "name": SOURCE,
            "path": "/offset/ds-inc",
            "pagination": {"type": "offset", "limit": LIMIT, "total_path": "total"},
            "incremental": {"cursor_path": "updated_at", "param": "updated_since", "initial_value": INITIAL},
        }
        with emulated_harness(vendor, [config], tmp_path, monkeypatch) as built:
            yield built


def run(h: Harness, run_id: str, day: str = "2026-11-26") -> None:
    h.plan({"sources": [SOURCE], "run_id": run_id, "ingestion_date": day})


def asked_since(h: Harness) -> list[str]:
    """The updated_since of every request the vendor saw, in order (None when not sent)."""
    with h.vendor.state.lock:
        urls = list(h.vendor.state.seen_urls)
    return [parse_qs(urlsplit(url).query).get("updated_since", ["-"])[0] for url in urls]


def dead_letters(h: Harness) -> int:
    attributes = h.sqs.get_queue_attributes(QueueUrl=h.dlqs[SOURCE], AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def test_the_second_run_asks_after_the_mark_lands_only_the_changes_and_the_mark_moves(
    inc: Harness, changing: ChangingDataset
) -> None:
    marks = MarkStore(inc.s3, BUCKET)
    highest = max(r["updated_at"] for r in changing.records(None, None))
    # Given a first run: no mark yet, so the vendor is asked from the initial value, and every record lands
    run(inc, "r1")
    inc.drain(SOURCE)
    assert inc.status("r1").complete
    assert set(asked_since(inc)) == {INITIAL}
    assert len(inc.records(SOURCE)) == 45 and marks.read(SOURCE)[0] is None
    # When the vendor updates 7 records, and the next run (the next day) is planned
    changed = changing.touch(7, CHANGED_AT)
    seen = len(asked_since(inc))
    run(inc, "r2", day="2026-11-27")
    inc.drain(SOURCE)
    # Then the mark moved to the first run's highest value, and the vendor was asked for records after it only
    mark = marks.read(SOURCE)[0]
    assert mark is not None and mark.value == highest and mark.run_id == "r1" and mark.previous is None
    assert set(asked_since(inc)[seen:]) == {highest}
    # And only the changed records landed, under the second run's ingestion date: one page instead of five
    second = [k for k in inc.keys(SOURCE) if "/ingestion_date=2026-11-27/" in k]
    assert len(second) == 1 and inc.status("r2").complete
    landed = [r for r in inc.records(SOURCE) if r["updated_at"] >= CHANGED_AT.isoformat().replace("+00:00", "Z")]
    assert sorted(r["id"] for r in landed) == sorted(changed)
    assert len(inc.records(SOURCE)) == 45 + 7
    # And the next planning moves the mark to the last change, never back
    run(inc, "r3", day="2026-11-28")
    moved = marks.read(SOURCE)[0]
    assert moved is not None and moved.value == "2026-11-26T12:00:06Z" and moved.previous == highest
    assert moved.run_id == "r2"


def test_a_page_in_the_dlq_keeps_the_mark_and_after_redrive_and_completion_it_moves(
    inc: Harness, changing: ChangingDataset
) -> None:
    marks = MarkStore(inc.s3, BUCKET)
    # Given a first run whose page 3 fails every time: it ends in the DLQ, the run is incomplete
    inc.vendor.inject("offset", "ds-inc", 3, Fault("status", status=500), forever=True)
    run(inc, "r1")
    inc.drain(SOURCE)
    assert not inc.status("r1").complete and dead_letters(inc) == 1
    # When the next run is planned: the mark stays where it was (none), and the same window is asked again
    seen = len(asked_since(inc))
    run(inc, "r2", day="2026-11-27")
    assert marks.read(SOURCE)[0] is None
    assert set(asked_since(inc)[seen:]) == {INITIAL}
    assert sorted(MarkStore(inc.s3, BUCKET).open_runs(SOURCE)) == ["r1", "r2"]
    # When the vendor recovers, the DLQ is redriven and everything drains: both runs complete
    inc.vendor.clear("offset", "ds-inc", 3)
    assert redrive(inc.sqs, inc.dlqs[SOURCE], inc.queues[SOURCE]) == 1
    inc.drain(SOURCE)
    assert inc.status("r1").complete and inc.status("r2").complete
    # Then the next planning moves the mark to the highest value they landed, and closes both
    run(inc, "r3", day="2026-11-28")
    mark = marks.read(SOURCE)[0]
    assert mark is not None and mark.value == max(r["updated_at"] for r in changing.records(None, None))
    assert marks.open_runs(SOURCE) == ["r3"]
