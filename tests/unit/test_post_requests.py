"""POST sources: each paginator's request per placement (query or body), the cursor carried as the vendor gave
it, what the vendor client sends (JSON body, redirects), errors reported in a 200, and request fingerprints."""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from apilake.auth import Credentials
from apilake.config import Source, parse_sources
from apilake.exceptions import BadResponseError, PermanentHttpError
from apilake.http import Deadline, VendorClient
from apilake.ingest import request_fingerprint
from apilake.messages import WorkItem
from apilake.pagination import NextPage, PageRequest, VendorPage, paginator_for

URL = "https://api.example.com/search"
GRAPHQL = {"query": "query($after: String) { items(after: $after) { id } }", "variables": {"after": None}}


def source(pagination: dict[str, Any], method: str = "POST", body: Any = None, **extra: Any) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/search",
        "params": {"index": "things"},
        "records_path": "hits",
        "pagination": pagination,
        "method": method,
        **({"body": body} if body is not None else {}),
        **extra,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def item(page: int = 1, cursor: str | None = None, shard: str = "all") -> WorkItem:
    return WorkItem(
        run_id="r1", source="api-x", ingestion_date=date(2026, 11, 26), shard=shard, page=page, cursor=cursor
    )


def vendor_page(document: Any, url: str = URL) -> VendorPage:
    return VendorPage(document=document, headers={}, url=url, size_bytes=0, latency_ms=0.0)


PAGE_NUMBER = {"type": "page_number", "size_param": "hitsPerPage", "page_size": 50, "first_page": 0}
OFFSET = {"type": "offset", "offset_param": "from", "limit_param": "size", "limit": 25, "total_path": "total"}
CURSOR = {"type": "cursor", "cursor_param": "variables.after", "cursor_path": "next"}
QUERY_ONLY = {"index": "things"}

# (pagination, body template, work item) -> (query params, JSON body)
REQUESTS = [
    pytest.param(
        {**PAGE_NUMBER, "placement": "body"},
        {"query": "shoes"},
        item(3),
        QUERY_ONLY,
        {"query": "shoes", "page": 2, "hitsPerPage": 50},
        id="page number in the body (numbers stay numbers)",
    ),
    pytest.param(
        PAGE_NUMBER,
        {"query": "shoes"},
        item(3),
        {**QUERY_ONLY, "page": "2", "hitsPerPage": "50"},
        {"query": "shoes"},
        id="page number in the query of a POST",
    ),
    pytest.param(
        {**OFFSET, "placement": "body", "offset_param": "page.from", "limit_param": "page.size"},
        {"query": {"match_all": {}}},
        item(4),
        QUERY_ONLY,
        {"query": {"match_all": {}}, "page": {"from": 75, "size": 25}},
        id="offset and limit at nested paths the template lacks",
    ),
    pytest.param(
        OFFSET,
        None,
        item(2),
        {**QUERY_ONLY, "from": "25", "size": "25"},
        {},
        id="offset in the query of a POST without a body",
    ),
    pytest.param(
        {**CURSOR, "placement": "body"},
        GRAPHQL,
        item(1),
        QUERY_ONLY,
        GRAPHQL,
        id="GraphQL page 1: the template as written",
    ),
    pytest.param(
        {**CURSOR, "placement": "body"},
        GRAPHQL,
        item(2, cursor='"Y3Vyc29yOjUw"'),
        QUERY_ONLY,
        {**GRAPHQL, "variables": {"after": "Y3Vyc29yOjUw"}},
        id="GraphQL page 2: the cursor at variables.after",
    ),
    pytest.param(
        {**CURSOR, "placement": "body", "cursor_param": "search_after"},
        {"size": 100, "sort": [{"ts": "asc"}, {"id": "asc"}]},
        item(2, cursor='[1700000000000,"doc-7"]'),
        QUERY_ONLY,
        {"size": 100, "sort": [{"ts": "asc"}, {"id": "asc"}], "search_after": [1700000000000, "doc-7"]},
        id="Elasticsearch search_after: a list, as the vendor gave it",
    ),
    pytest.param(
        {**CURSOR, "cursor_param": "after"},
        GRAPHQL,
        item(2, cursor="abc"),
        {**QUERY_ONLY, "after": "abc"},
        GRAPHQL,
        id="cursor in the query of a POST",
    ),
    pytest.param({"type": "single"}, {"q": 1}, item(1), QUERY_ONLY, {"q": 1}, id="single page"),
]


@pytest.mark.parametrize(("pagination", "body", "work", "params", "sent"), REQUESTS)
def test_each_paginator_builds_its_request_per_placement(
    pagination: dict[str, Any], body: Any, work: WorkItem, params: dict[str, str], sent: dict[str, Any]
) -> None:
    assert paginator_for(source(pagination, body=body)).request(work) == PageRequest(URL, params, "POST", sent)


def test_a_get_has_no_body_and_its_values_in_the_query() -> None:
    request = paginator_for(source(PAGE_NUMBER, method="GET")).request(item(2))
    assert request == PageRequest(URL, {**QUERY_ONLY, "page": "1", "hitsPerPage": "50"}, "GET", None)


def test_every_page_gets_its_own_copy_of_the_template() -> None:
    # Given a GraphQL source
    config = source({**CURSOR, "placement": "body"}, body=GRAPHQL)
    paginator = paginator_for(config)
    # When page 2's body is built, and changed by whoever holds it
    second = paginator.request(item(2, cursor='"c2"'))
    assert second.body is not None
    second.body["variables"]["after"] = "changed"
    # Then the template and page 1's body are untouched
    assert config.body == GRAPHQL
    assert paginator.request(item(1)).body == GRAPHQL


@pytest.mark.parametrize("style", [{"type": "next_url", "next_url_path": "next"}, {"type": "link_header"}])
def test_a_next_url_is_posted_with_the_same_body(style: dict[str, Any]) -> None:
    paginator = paginator_for(source(style, body={"q": "x"}))
    assert paginator.request(item(2, cursor=URL + "?page=2")) == PageRequest(URL + "?page=2", {}, "POST", {"q": "x"})


def test_a_date_shards_window_stays_in_the_query_string() -> None:
    sharding = {"type": "daily", "start_param": "since", "end_param": "until"}
    paginator = paginator_for(source({**CURSOR, "placement": "body"}, body=GRAPHQL, sharding=sharding))
    request = paginator.request(item(1, shard="2026-02-28"))
    assert request.params == {**QUERY_ONLY, "since": "2026-02-28", "until": "2026-03-01"}
    assert request.body == GRAPHQL


@pytest.mark.parametrize(
    ("found", "carried"),
    [("Y3Vy", '"Y3Vy"'), (50, "50"), ([1700000000000, "doc-7"], '[1700000000000,"doc-7"]'), ({"k": "ü"}, '{"k":"ü"}')],
)
def test_a_cursor_for_the_body_is_carried_as_its_json(found: Any, carried: str) -> None:
    # Given a cursor in the body, and a page whose response holds the next cursor
    paginator = paginator_for(source({**CURSOR, "placement": "body"}, body=GRAPHQL))
    # When the chain goes on, the work item carries the cursor's JSON, and the next body holds it as it was
    following = paginator.next_page(item(1), vendor_page({"next": found}), [1])
    assert following == NextPage(cursor=carried)
    assert paginator.request(item(2, cursor=carried)).body == {**GRAPHQL, "variables": {"after": found}}


def test_a_cursor_from_the_last_record_for_the_body_keeps_its_type() -> None:
    pagination = {
        "type": "cursor",
        "cursor_param": "search_after",
        "cursor_from": "last_record",
        "cursor_field": "sort",
    }
    paginator = paginator_for(source({**pagination, "placement": "body"}, body={"size": 2}))
    following = paginator.next_page(item(1), vendor_page({}), [{"sort": [1, "a"]}, {"sort": [2, "b"]}])
    assert following == NextPage(cursor='[2,"b"]')


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"next": True}, "cursor at 'next' is a bool, not a cursor"),
        ({"next": [1, "a"]}, "the vendor returned the same cursor again on page 2: stopping a loop"),
    ],
)
def test_a_cursor_for_the_body_that_cannot_go_on_is_a_bad_response(document: Any, message: str) -> None:
    paginator = paginator_for(source({**CURSOR, "placement": "body"}, body=GRAPHQL))
    with pytest.raises(BadResponseError, match=message):
        paginator.next_page(item(2, cursor='[1,"a"]'), vendor_page(document), [1])


# -- what the vendor client sends -----------------------------------------------------------------------------


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.raw = io.BytesIO(json.dumps(body if body is not None else {"hits": []}).encode())
    resp.headers = CaseInsensitiveDict(headers or {})
    resp.url = URL
    return resp


class StubSession(requests.Session):
    """Plays the given responses in order and records each request as prepared (it never leaves the process)."""

    def __init__(self, *outcomes: requests.Response) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return self.outcomes.pop(0)


def fetch(session: StubSession, config: Source, request: PageRequest) -> VendorPage:
    return VendorClient(config, session, Credentials(), sleep=lambda _: None).fetch(request, Deadline.unbounded())


def sent_body(prepared: requests.PreparedRequest) -> Any:
    assert prepared.body is not None
    return json.loads(prepared.body)


POST = PageRequest(URL, {"index": "things"}, "POST", {"variables": {"after": "c2"}, "query": "q"})


def test_a_post_goes_out_with_its_json_body() -> None:
    session = StubSession(response(200))
    fetch(session, source({"type": "single"}), POST)
    sent = session.sent[0]
    assert (sent.method, sent.url) == ("POST", URL + "?index=things")
    assert sent.headers["Content-Type"] == "application/json"
    assert sent_body(sent) == POST.body


def test_a_content_type_of_the_sources_headers_is_kept() -> None:
    session = StubSession(response(200))
    fetch(session, source({"type": "single"}, headers={"Content-Type": "application/graphql+json"}), POST)
    assert session.sent[0].headers["Content-Type"] == "application/graphql+json"


def test_a_get_goes_out_without_a_body() -> None:
    session = StubSession(response(200))
    fetch(session, source({"type": "single"}, method="GET"), PageRequest(URL))
    assert (session.sent[0].method, session.sent[0].body) == ("GET", None)


@pytest.mark.parametrize("status", [307, 308])
def test_a_307_or_308_repeats_the_post_with_its_body(status: int) -> None:
    session = StubSession(response(status, headers={"Location": "/v2/search"}), response(200, {"hits": [1]}))
    assert fetch(session, source({"type": "single"}), POST).document == {"hits": [1]}
    moved = session.sent[1]
    assert (moved.method, moved.url, sent_body(moved)) == ("POST", "https://api.example.com/v2/search", POST.body)


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_turn_a_post_into_a_get_is_refused(status: int) -> None:
    session = StubSession(response(status, headers={"Location": "/v2/search"}))
    with pytest.raises(PermanentHttpError) as raised:
        fetch(session, source({"type": "single"}), POST)
    assert str(raised.value) == (
        f"redirect ({status}) of a POST to https://api.example.com/v2/search refused: only 307 and 308 keep "
        "the method and the body; point the source's path at where it leads"
    )
    assert len(session.sent) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307])
def test_a_get_follows_every_redirect_on_its_host(status: int) -> None:
    session = StubSession(response(status, headers={"Location": "/v2/search"}), response(200))
    fetch(session, source({"type": "single"}, method="GET"), PageRequest(URL))
    assert (session.sent[1].method, session.sent[1].url) == ("GET", "https://api.example.com/v2/search")


GRAPHQL_ERROR = {"errors": [{"message": "Field 'itemz' doesn't exist on type 'Query'"}, {"message": "second"}]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            GRAPHQL_ERROR,
            "the response of https://api.example.com/search reports 2 error(s) at 'errors': "
            "\"Field 'itemz' doesn't exist on type 'Query'\"",
        ),
        (
            {"data": {"items": [1]}, "errors": [{"message": "x" * 300}]},
            f"the response of https://api.example.com/search reports 1 error(s) at 'errors': '{'x' * 200}'",
        ),
        ({"errors": [{"code": 7}]}, "the response of https://api.example.com/search reports 1 error(s) at 'errors'"),
        ({"errors": "quota exceeded"}, "reports an error at 'errors': 'quota exceeded'"),
    ],
)
def test_errors_reported_in_a_200_fail_the_page_with_the_vendors_words(document: Any, message: str) -> None:
    session = StubSession(response(200, document))
    with pytest.raises(BadResponseError) as raised:
        fetch(session, source({"type": "single"}, error_path="errors"), POST)
    assert str(raised.value).endswith(message)


@pytest.mark.parametrize("document", [{"data": 1}, {"data": 1, "errors": []}, {"errors": None}, {"errors": {}}])
def test_no_error_reported_is_a_page_like_any_other(document: Any) -> None:
    assert fetch(StubSession(response(200, document)), source({"type": "single"}, error_path="errors"), POST)


def test_without_error_path_a_200_with_errors_is_read_as_a_page() -> None:
    assert fetch(StubSession(response(200, GRAPHQL_ERROR)), source({"type": "single"}), POST).document == GRAPHQL_ERROR


# -- fingerprints ---------------------------------------------------------------------------------------------


def test_a_gets_fingerprint_is_what_it_always_was() -> None:
    # sha256 of "https://api.example.com/items?page=2&status=all", as pages landed before POST existed hold it
    request = PageRequest("https://api.example.com/items", {"status": "all", "page": "2"})
    assert request_fingerprint(request) == "6a13192d7585bce0dcc8cf6bdcbb13c4860911763dff42f9971d71654c4cdff0"


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        (
            PageRequest(URL, {}, "POST", {"a": 1, "b": {"c": 2, "d": 3}}),
            PageRequest(URL, {}, "POST", {"b": {"d": 3, "c": 2}, "a": 1}),
            True,
        ),
        (
            PageRequest(URL, {}, "POST", {"variables": {"after": "c1"}}),
            PageRequest(URL, {}, "POST", {"variables": {"after": "c2"}}),
            False,
        ),
        (PageRequest(URL, {}, "POST", {"n": 1}), PageRequest(URL, {}, "POST", {"n": "1"}), False),
        (PageRequest(URL, {}, "POST", {}), PageRequest(URL, {}, "GET", None), False),
        (PageRequest(URL, {"q": "1"}, "POST", {}), PageRequest(URL, {"q": "2"}, "POST", {}), False),
    ],
    ids=["keys in another order", "another cursor", "a number or its text", "POST {} or GET", "another query"],
)
def test_a_posts_fingerprint_holds_its_method_and_canonical_body(
    one: PageRequest, other: PageRequest, same: bool
) -> None:
    assert (request_fingerprint(one) == request_fingerprint(other)) is same
