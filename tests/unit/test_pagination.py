"""Each paginator: the request for a page, and whether (and how) the chain goes on."""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

import pytest

from apilake.config import Source, parse_sources
from apilake.exceptions import BadResponseError
from apilake.messages import WorkItem
from apilake.pagination import NextPage, PageRequest, VendorPage, paginator_for, shard_params


def source(pagination: dict[str, Any], **extra: Any) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/things",
        "params": {"status": "all"},
        "records_path": "data",
        "pagination": pagination,
        **extra,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def item(page: int = 1, cursor: str | None = None, shard: str = "all") -> WorkItem:
    return WorkItem(
        run_id="r1", source="api-x", ingestion_date=date(2026, 11, 26), shard=shard, page=page, cursor=cursor
    )


def vendor_page(
    document: Any, headers: dict[str, str] | None = None, url: str = "https://api.example.com/things"
) -> VendorPage:
    return VendorPage(document=document, headers=headers or {}, url=url, size_bytes=0, latency_ms=0.0)


class TestPageNumber:
    def test_requests_carry_page_and_size_after_static_params(self) -> None:
        paginator = paginator_for(source({"type": "page_number", "page_size": 50, "total_path": "meta.total"}))
        assert paginator.request(item(3)) == PageRequest(
            "https://api.example.com/things", {"status": "all", "page": "3", "per_page": "50"}
        )

    def test_zero_based_pages(self) -> None:
        paginator = paginator_for(source({"type": "page_number", "first_page": 0, "size_param": None}))
        assert paginator.request(item(1)).params == {"status": "all", "page": "0"}

    @pytest.mark.parametrize(("total", "pages"), [(0, 0), (1, 1), (50, 1), (51, 2), (1000, 20)])
    def test_a_total_of_records_gives_the_page_count(self, total: int, pages: int) -> None:
        paginator = paginator_for(source({"type": "page_number", "page_size": 50, "total_path": "meta.total"}))
        assert paginator.fans_out and paginator.needs_probe
        assert paginator.page_count(vendor_page({"meta": {"total": total}})) == pages

    def test_a_total_of_pages_is_taken_as_is(self) -> None:
        paginator = paginator_for(source({"type": "page_number", "total_pages_path": "meta.pages"}))
        assert paginator.page_count(vendor_page({"meta": {"pages": 7}})) == 7

    @pytest.mark.parametrize("bad", [None, -1, 2.5, "12", True])
    def test_a_total_that_is_not_a_count_is_a_bad_response(self, bad: Any) -> None:
        paginator = paginator_for(source({"type": "page_number", "total_path": "total"}))
        with pytest.raises(BadResponseError):
            paginator.page_count(vendor_page({"total": bad} if bad is not None else {}))

    @pytest.mark.parametrize(
        ("records", "stop_on_short", "goes_on"),
        [(10, True, True), (9, True, False), (0, True, False), (9, False, True), (0, False, False)],
    )
    def test_without_a_total_the_chain_stops_on_a_short_or_empty_page(
        self, records: int, stop_on_short: bool, goes_on: bool
    ) -> None:
        paginator = paginator_for(source({"type": "page_number", "page_size": 10, "stop_on_short_page": stop_on_short}))
        assert not paginator.fans_out
        following = paginator.next_page(item(1), vendor_page({}), list(range(records)))
        assert following == (NextPage(cursor=None) if goes_on else None)


class TestOffset:
    def test_requests_carry_offset_and_limit(self) -> None:
        paginator = paginator_for(source({"type": "offset", "limit": 25, "total_path": "total"}))
        assert paginator.request(item(3)).params == {"status": "all", "offset": "50", "limit": "25"}
        assert paginator.page_count(vendor_page({"total": 51})) == 3


class TestCursor:
    config: ClassVar[dict[str, Any]] = {
        "type": "cursor",
        "cursor_param": "after",
        "cursor_path": "paging.next",
        "has_more_path": "paging.more",
    }

    def test_first_page_has_no_cursor_the_next_carries_it(self) -> None:
        paginator = paginator_for(source(self.config))
        assert "after" not in paginator.request(item(1)).params
        assert paginator.request(item(2, cursor="abc")).params["after"] == "abc"

    @pytest.mark.parametrize(
        ("paging", "expected"),
        [
            ({"next": "c2", "more": True}, NextPage("c2")),
            ({"next": 42, "more": True}, NextPage("42")),
            ({"next": "c2", "more": False}, None),
            ({"next": None, "more": False}, None),
            ({"next": ""}, None),
        ],
    )
    def test_the_chain_follows_the_cursor_until_it_ends(
        self, paging: dict[str, Any], expected: NextPage | None
    ) -> None:
        assert (
            paginator_for(source(self.config)).next_page(item(1, "c1"), vendor_page({"paging": paging}), [1])
            == expected
        )

    def test_a_repeated_cursor_stops_instead_of_looping(self) -> None:
        with pytest.raises(BadResponseError, match="same cursor again"):
            paginator_for(source(self.config)).next_page(item(2, "c1"), vendor_page({"paging": {"next": "c1"}}), [1])

    def test_has_more_without_a_cursor_is_a_bad_response(self) -> None:
        with pytest.raises(BadResponseError, match="has_more is true"):
            paginator_for(source(self.config)).next_page(item(1), vendor_page({"paging": {"more": True}}), [1])


class TestCursorFromTheLastRecord:
    """Stripe's lists: ``has_more`` and ``starting_after=<id of the last record>``."""

    config: ClassVar[dict[str, Any]] = {
        "type": "cursor",
        "cursor_param": "starting_after",
        "cursor_from": "last_record",
        "cursor_field": "id",
        "has_more_path": "has_more",
    }

    def test_first_page_has_no_cursor_the_next_starts_after_the_carried_id(self) -> None:
        paginator = paginator_for(source(self.config, params={"limit": "100"}))
        assert paginator.request(item(1)).params == {"limit": "100"}
        assert paginator.request(item(2, cursor="cus_9")).params == {"limit": "100", "starting_after": "cus_9"}

    @pytest.mark.parametrize(
        ("config", "document", "records", "expected"),
        [
            ({}, {"has_more": True}, [{"id": "cus_1"}, {"id": "cus_2"}], NextPage("cus_2")),
            ({}, {"has_more": True}, [{"id": 7}], NextPage("7")),
            ({}, {"has_more": False}, [{"id": "cus_1"}], None),
            ({}, {"has_more": False}, [], None),
            ({"has_more_path": None}, {}, [{"id": "cus_1"}], NextPage("cus_1")),
            ({"has_more_path": None}, {}, [], None),
            ({"cursor_field": "ref.key"}, {"has_more": True}, [{"ref": {"key": "k1"}}], NextPage("k1")),
            ({"cursor_from": "first_record"}, {"has_more": True}, [{"id": "a"}, {"id": "b"}], NextPage("a")),
        ],
        ids=[
            "last id",
            "numeric id",
            "no more",
            "empty, no more",
            "no has_more: go on",
            "no has_more: empty ends",
            "nested field",
            "first record",
        ],
    )
    def test_the_chain_starts_after_the_record_until_it_ends(
        self, config: dict[str, Any], document: dict[str, Any], records: list[Any], expected: NextPage | None
    ) -> None:
        paginator = paginator_for(source({**self.config, **config}))
        assert paginator.next_page(item(1), vendor_page(document), records) == expected

    @pytest.mark.parametrize(
        ("records", "message"),
        [
            ([], "holds no record but has_more is true"),
            ([{"id": "cus_1"}, {"name": "no id"}], "last record of page 1 has no 'id'"),
            ([{"id": ""}], "has no 'id'"),
            ([{"id": {"nested": 1}}], "'id' of the last record is a dict, not a cursor"),
            ([{"id": True}], "is a bool"),
            ([{"id": "x" * 5000}], "more than the 4096"),
        ],
        ids=["empty page with has_more", "last record without the field", "empty id", "object id", "bool id", "long"],
    )
    def test_a_page_with_no_cursor_to_go_on_from_is_a_bad_response(self, records: list[Any], message: str) -> None:
        with pytest.raises(BadResponseError, match=message):
            paginator_for(source(self.config)).next_page(item(1), vendor_page({"has_more": True}), records)

    def test_the_same_last_id_again_stops_instead_of_looping(self) -> None:
        with pytest.raises(BadResponseError, match="same cursor again"):
            paginator_for(source(self.config)).next_page(
                item(2, "cus_1"), vendor_page({"has_more": True}), [{"id": "cus_1"}]
            )


class TestNextUrl:
    config: ClassVar[dict[str, Any]] = {"type": "next_url", "next_url_path": "links.next"}

    def test_page_one_is_the_configured_request_the_others_the_given_url(self) -> None:
        paginator = paginator_for(source(self.config))
        assert paginator.request(item(1)).url == "https://api.example.com/things"
        assert paginator.request(item(2, "https://api.example.com/things?page=2")) == PageRequest(
            "https://api.example.com/things?page=2"
        )

    def test_relative_links_are_resolved_against_the_page(self) -> None:
        following = paginator_for(source(self.config)).next_page(
            item(1), vendor_page({"links": {"next": "/things?page=2"}}), []
        )
        assert following == NextPage("https://api.example.com/things?page=2")

    def test_a_link_to_another_host_is_refused(self) -> None:
        page = vendor_page({"links": {"next": "https://evil.example.net/x"}})
        with pytest.raises(BadResponseError, match=r"points to https://evil.example.net"):
            paginator_for(source(self.config)).next_page(item(1), page, [])

    def test_no_link_ends_the_chain(self) -> None:
        assert paginator_for(source(self.config)).next_page(item(1), vendor_page({"links": {"next": None}}), []) is None


class TestLinkHeader:
    def test_rel_next_is_followed(self) -> None:
        header = (
            '<https://api.example.com/things?page=1>; rel="prev", <https://api.example.com/things?page=3>; rel="next"'
        )
        page = vendor_page([], headers={"Link": header})
        following = paginator_for(source({"type": "link_header"}, records_path="")).next_page(item(2), page, [])
        assert following == NextPage("https://api.example.com/things?page=3")

    def test_no_next_relation_ends_the_chain(self) -> None:
        page = vendor_page([], headers={"Link": '<https://api.example.com/things?page=1>; rel="first"'})
        assert paginator_for(source({"type": "link_header"}, records_path="")).next_page(item(2), page, []) is None


def test_single_page_is_one_page_without_a_probe() -> None:
    paginator = paginator_for(source({"type": "single"}))
    assert paginator.fans_out and not paginator.needs_probe
    assert paginator.page_count(None) == 1


def test_a_daily_shard_sends_its_window() -> None:
    sharded = source({"type": "single"}, sharding={"type": "daily", "start_param": "since", "end_param": "until"})
    assert shard_params(sharded, "2026-11-25") == {"since": "2026-11-25", "until": "2026-11-26"}
    assert paginator_for(sharded).request(item(shard="2026-02-28")).params == {
        "status": "all",
        "since": "2026-02-28",
        "until": "2026-03-01",
    }
