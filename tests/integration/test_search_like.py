"""POST sources end to end in-process: an Elasticsearch-like search (``search_after`` in the JSON body, taken from
the last hit's ``sort``; or ``from``/``size`` fanned out), and a GraphQL connection (the cursor at
``variables.after``, ``pageInfo.hasNextPage``/``endCursor``, ``errors`` in a 200)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from apilake.lake import page_key
from apilake_dev.vendors.fake import Fault, encode_cursor
from apilake_dev.vendors.search_like import SORT, SearchLikeDataset, SearchLikeVendor
from tests.integration.conftest import API_KEY, BUCKET, Harness, emulated_harness, source_configs

SOURCE = "hits"
RUN = "search-1"
DAY = date(2026, 11, 26)
PLAN = {"sources": [SOURCE], "run_id": RUN, "ingestion_date": DAY.isoformat()}
GRAPHQL_QUERY = (
    "query($first: Int!, $after: String) { items(first: $first, after: $after) "
    "{ pageInfo { hasNextPage endCursor } nodes { id seq name } } }"
)


def search_after(size: int) -> dict[str, Any]:
    return {
        "path": "/search/ds-s",
        "method": "POST",
        "body": {"size": size, "query": {"match_all": {}}, "sort": SORT},
        "records_path": "hits.hits",
        "record_id_path": "_id",
        "pagination": {
            "type": "cursor",
            "placement": "body",
            "cursor_param": "search_after",
            "cursor_from": "last_record",
            "cursor_field": "sort",
        },
    }


def graphql(first: int, query: str = GRAPHQL_QUERY) -> dict[str, Any]:
    return {
        "path": "/graphql/ds-s",
        "method": "POST",
        "body": {"query": query, "variables": {"first": first, "after": None}},
        "records_path": "data.items.nodes",
        "error_path": "errors",
        "pagination": {
            "type": "cursor",
            "placement": "body",
            "cursor_param": "variables.after",
            "cursor_path": "data.items.pageInfo.endCursor",
            "has_more_path": "data.items.pageInfo.hasNextPage",
        },
    }


@contextmanager
def landing(
    dataset: SearchLikeDataset, config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SearchLikeVendor, Harness]]:
    """The vendor and a harness around one source (``config`` over the common settings: key, retries, timeouts)."""
    vendor = SearchLikeVendor([dataset], api_key=API_KEY)
    with vendor:
        common = next(c for c in source_configs(vendor.base_url) if c["name"] == "api-b")
        source = {**common, "name": SOURCE, "params": {}, **config}
        with emulated_harness(vendor, [source], tmp_path, monkeypatch) as harness:
            yield vendor, harness


def fingerprints(harness: Harness) -> list[str]:
    return [
        harness.s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["request-fingerprint"]
        for key in harness.keys(SOURCE)
    ]


@pytest.mark.parametrize(("total", "size", "pages"), [(47, 10, 6), (40, 10, 5), (3, 100, 2), (0, 10, 1)])
def test_a_search_after_walk_lands_every_record_exactly_once(
    total: int, size: int, pages: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an Elasticsearch-like index, and a source taking search_after from the last hit's sort values
    dataset = SearchLikeDataset("ds-s", total=total)
    with landing(dataset, search_after(size), tmp_path, monkeypatch) as (vendor, harness):
        # And page 2 failing once with a 503 (its retry must post the same body again)
        vendor.inject("search", "ds-s", 2, Fault("status", status=503))
        # When the run is planned and the source's queue drained
        harness.plan(PLAN)
        stats = harness.drain(SOURCE)
        # Then every page lands once (the walk ends on the empty page after the last hit) and every record once
        assert stats.failed == 0 and stats.handler_errors == [] and harness.dlq_bodies(SOURCE) == []
        assert harness.keys(SOURCE) == [page_key(SOURCE, DAY, "all", page) for page in range(1, pages + 1)]
        ids = [r["id"] for r in dataset.records(None, None)]
        assert [hit["_id"] for hit in harness.records(SOURCE)] == ids
        assert [hit["_source"]["id"] for hit in harness.records(SOURCE)] == ids
        # And each request was the template with the sort values of the page before's last hit
        asked = dataset.bodies("search")
        retried = 1 if total > size else 0  # a page 2 to fail
        assert len(asked) == pages + retried
        afters = [body.get("search_after") for body in asked]
        lasts = [min(page * size, total) - 1 for page in range(1, pages)]  # the last hit of each page but the last
        expected = [None, *([last, ids[last]] for last in lasts)]
        assert afters == expected[:2] + expected[1:2] * retried + expected[2:]
        assert all(
            {k: v for k, v in body.items() if k != "search_after"} == search_after(size)["body"] for body in asked
        )
        # And no two landed pages claim the same request
        assert len(set(fingerprints(harness))) == pages


def test_from_and_size_in_the_body_fan_out_from_the_probed_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same index, paged by from/size in the body, the total at hits.total.value
    dataset = SearchLikeDataset("ds-s", total=43)
    config = {
        **search_after(10),
        "body": {"query": {"match_all": {}}},
        "pagination": {
            "type": "offset",
            "placement": "body",
            "offset_param": "from",
            "limit_param": "size",
            "limit": 10,
            "total_path": "hits.total.value",
        },
    }
    with landing(dataset, config, tmp_path, monkeypatch) as (_, harness):
        # When the planner probes page 1 (a POST) and enqueues every page, and the queue drains
        harness.plan(PLAN)
        stats = harness.drain(SOURCE)
        # Then the five pages land, each record once, and the bodies asked for each offset once (the probe aside)
        assert stats.failed == 0 and harness.dlq_bodies(SOURCE) == []
        assert harness.keys(SOURCE) == [page_key(SOURCE, DAY, "all", page) for page in range(1, 6)]
        assert [hit["_id"] for hit in harness.records(SOURCE)] == [r["id"] for r in dataset.records(None, None)]
        assert sorted(body["from"] for body in dataset.bodies("search")) == [0, 0, 10, 20, 30, 40]
        assert all(body["size"] == 10 for body in dataset.bodies("search"))


@pytest.mark.parametrize(("total", "first", "pages"), [(25, 10, 3), (30, 10, 3), (4, 50, 1), (0, 10, 1)])
def test_a_graphql_connection_lands_every_node_exactly_once(
    total: int, first: int, pages: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a GraphQL connection, the cursor at variables.after, hasNextPage and endCursor in pageInfo
    dataset = SearchLikeDataset("ds-s", total=total)
    with landing(dataset, graphql(first), tmp_path, monkeypatch) as (_, harness):
        # When the run is planned and the queue drained
        harness.plan(PLAN)
        stats = harness.drain(SOURCE)
        # Then the chain stops where hasNextPage is false, and every node lands once
        assert stats.failed == 0 and harness.dlq_bodies(SOURCE) == []
        assert harness.keys(SOURCE) == [page_key(SOURCE, DAY, "all", page) for page in range(1, pages + 1)]
        assert [r["id"] for r in harness.records(SOURCE)] == [r["id"] for r in dataset.records(None, None)]
        # And each page asked with the endCursor of the page before, the query and first as written
        asked = dataset.bodies("graphql")
        assert [body["variables"]["after"] for body in asked] == [
            None,
            *(encode_cursor(page * first - 1) for page in range(1, pages)),
        ]
        assert {(body["query"], body["variables"]["first"]) for body in asked} == {(GRAPHQL_QUERY, first)}


def test_redelivered_graphql_pages_neither_duplicate_nor_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a landed GraphQL run of three pages
    dataset = SearchLikeDataset("ds-s", total=25)
    with landing(dataset, graphql(10), tmp_path, monkeypatch) as (vendor, harness):
        harness.plan(PLAN)
        harness.drain(SOURCE)
        before = {key: harness.s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in harness.keys(SOURCE)}
        # When pages 1 and 2 are delivered again (page 2 with the cursor its message carries: endCursor's JSON)
        item = {"run_id": RUN, "source": SOURCE, "ingestion_date": DAY.isoformat(), "shard": "all"}
        harness.send(SOURCE, {**item, "page": 1})
        harness.send(SOURCE, {**item, "page": 2, "cursor": json.dumps(encode_cursor(9))})
        stats = harness.drain(SOURCE)
        # Then both were fetched again and landed unchanged, page 3 was not asked again, and each node is there once
        assert stats.failed == 0 and harness.dlq_bodies(SOURCE) == []
        assert [vendor.requests_for("graphql", "ds-s", page) for page in (1, 2, 3)] == [2, 2, 1]
        assert {key: harness.s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in harness.keys(SOURCE)} == before
        assert [r["id"] for r in harness.records(SOURCE)] == [r["id"] for r in dataset.records(None, None)]


def test_graphql_errors_in_a_200_fail_the_page_with_the_vendors_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a source whose query asks for a field the schema does not have
    dataset = SearchLikeDataset("ds-s", total=25)
    config = graphql(10, GRAPHQL_QUERY.replace("items(", "itemz("))
    with landing(dataset, config, tmp_path, monkeypatch) as (_, harness):
        # When the run is planned and the queue drained
        harness.plan(PLAN)
        harness.drain(SOURCE)
        # Then page 1 lands nowhere, its message is in the DLQ, and the reason is the vendor's, not "records not found"
        assert harness.keys(SOURCE) == []
        assert [json.loads(body)["page"] for body in harness.dlq_bodies(SOURCE)] == [1]
        shard = harness.status(RUN).sources[0].shards[0]
        assert shard.missing_pages == [1] and not shard.complete
        assert "reports 1 error(s) at 'errors': \"Cannot query field 'itemz' on type 'Query'.\"" in shard.failures[1]
