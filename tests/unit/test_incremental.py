"""Incremental sources: values, window shards, the highest value of a page, and the mark's conditional writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.config import Incremental, parse_sources
from apilake.exceptions import BadResponseError, ConfigError
from apilake.incremental import HighWater, minus_overlap, parse_value, to_json, window_of, window_params, window_shard
from apilake.lake import encode_page
from apilake.marks import Mark, MarkStore
from apilake.messages import WorkItem

STAMP = Incremental(cursor_path="updated_at", param="updated_since", initial_value="2026-01-01T00:00:00Z", overlap=60)
NUMBER = Incremental(cursor_path="meta.id", param="after_id", initial_value=0, format="number", overlap=5)
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def source(**incremental: Any) -> dict[str, Any]:
    return {
        "name": "inc",
        "base_url": "https://api.example.com",
        "records_path": "items",
        "pagination": {"type": "offset", "total_path": "total"},
        "incremental": {"cursor_path": "updated_at", "param": "updated_since", **incremental},
    }


@pytest.mark.parametrize(
    ("incremental", "message"),
    [
        ({"initial_value": "yesterday"}, "incremental.initial_value: Value error, not an ISO 8601 timestamp"),
        ({"initial_value": 5}, "initial_value: Value error, expected an ISO 8601 timestamp"),
        ({"initial_value": "x", "format": "number"}, "initial_value: Value error, not a number"),
        ({"initial_value": 1, "format": "number", "overlap": -1}, "incremental.overlap"),
        ({"format": "number"}, "incremental.initial_value: Field required"),
    ],
)
def test_an_invalid_incremental_block_is_named(incremental: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources({"sources": [source(**incremental)]}, "sources.yaml")
    assert "source 'inc'" in str(raised.value) and message in str(raised.value)


def test_an_incremental_source_is_not_also_sharded_by_day() -> None:
    daily = {"type": "daily", "start_param": "from", "end_param": "to"}
    with pytest.raises(ConfigError, match="cannot also be incremental"):
        parse_sources({"sources": [{**source(initial_value="2026-01-01"), "sharding": daily}]}, "s.yaml")


def test_timestamps_are_read_in_utc_and_the_overlap_is_taken_off() -> None:
    value = parse_value(STAMP, "2026-11-25T23:59:30+01:00")
    assert to_json(value) == "2026-11-25T22:59:30Z"
    assert to_json(parse_value(STAMP, "2026-11-25T22:59:30")) == "2026-11-25T22:59:30Z"  # no zone: UTC
    assert to_json(minus_overlap(STAMP, value)) == "2026-11-25T22:58:30Z"
    assert minus_overlap(NUMBER, parse_value(NUMBER, "120")) == 115


@pytest.mark.parametrize(
    ("config", "since", "until", "shard", "params"),
    [
        (STAMP, "2026-11-25T22:59:30.5Z", None, "since-20261125T225930Z", {"updated_since": "2026-11-25T22:59:30Z"}),
        (NUMBER, 1234, None, "since-1234", {"after_id": "1234"}),
        (NUMBER, 1.5, None, "since-1.5", {"after_id": "1.5"}),
    ],
)
def test_a_window_travels_in_its_shard_name(
    config: Incremental, since: Any, until: Any, shard: str, params: dict[str, str]
) -> None:
    # The shard is a valid shard of a work item, and the worker reads the same window back from it
    name = window_shard(parse_value(config, since))
    assert name == shard
    WorkItem(run_id="r", source="inc", ingestion_date="2026-11-27", shard=name, page=1)
    assert window_params(config, name) == params


def test_an_explicit_window_sends_its_upper_bound_too() -> None:
    config = STAMP.model_copy(update={"end_param": "updated_before"})
    name = window_shard(parse_value(config, "2026-11-01T00:00:00Z"), parse_value(config, "2026-11-08T00:00:00Z"))
    assert name == "since-20261101T000000Z_until-20261108T000000Z"
    assert window_of(config, name)[1] == datetime(2026, 11, 8, tzinfo=UTC)
    assert window_params(config, name) == {
        "updated_since": "2026-11-01T00:00:00Z",
        "updated_before": "2026-11-08T00:00:00Z",
    }


def test_the_highest_value_of_a_page_is_noted_as_it_is_encoded() -> None:
    records = [{"meta": {"id": 7}}, {"meta": {"id": 31}}, {"meta": {"id": 12}}]
    observed = HighWater(records, NUMBER)
    digest, _ = encode_page(observed)
    assert observed.highest == 31 and len(observed) == 3 and digest == encode_page(records)[0]


@pytest.mark.parametrize("record", [{"other": 1}, {"updated_at": None}, {"updated_at": "soon"}])
def test_a_record_without_a_readable_cursor_fails_its_page(record: dict[str, Any]) -> None:
    observed = HighWater([{"updated_at": "2026-11-25T00:00:00Z"}, record], STAMP)
    with pytest.raises(BadResponseError, match="updated_at"):
        encode_page(observed)


@pytest.fixture
def store() -> Iterator[MarkStore]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        yield MarkStore(s3, "lake")


def mark(value: str) -> Mark:
    return Mark(value=value, moved_at=NOW, run_id="r")


def test_the_mark_is_written_only_over_the_version_that_was_read(store: MarkStore) -> None:
    # The first mark: created only if there is none
    assert store._write("inc", mark("2026-11-25T00:00:00Z"), None)
    assert not store._write("inc", mark("2026-11-24T00:00:00Z"), None)
    first, etag = store.read("inc")
    assert first is not None and first.value == "2026-11-25T00:00:00Z" and etag
    # Two planners read the same version: the first write wins, the second is refused (it reads again)
    assert store._write("inc", mark("2026-11-26T00:00:00Z"), etag)
    assert not store._write("inc", mark("2026-11-25T12:00:00Z"), etag)
    assert store.read("inc")[0] == mark("2026-11-26T00:00:00Z")


def test_settling_without_open_runs_leaves_the_mark(store: MarkStore) -> None:
    settled = store.settle("inc", STAMP, NOW)
    assert settled.mark is None and not settled.moved and settled.waiting == []
