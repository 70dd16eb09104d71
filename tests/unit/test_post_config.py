"""POST sources in the sources file: ``method``, the ``body`` template, ``placement: body`` and ``error_path``;
valid configs load, invalid ones fail with the file, the source, the field and the reason."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from apilake.config import parse_sources
from apilake.exceptions import ConfigError

BASE: dict[str, Any] = {
    "name": "api-x",
    "base_url": "https://api.example.com",
    "path": "/search",
    "records_path": "hits",
    "pagination": {"type": "single"},
}
GRAPHQL_BODY = {"query": "query($after: String) { items(after: $after) { id } }", "variables": {"after": None}}


def doc(**overrides: Any) -> dict[str, Any]:
    source = copy.deepcopy(BASE)
    source.update(overrides)
    return {"version": 1, "sources": [source]}


def cursor(**fields: Any) -> dict[str, Any]:
    return {"type": "cursor", "cursor_path": "next", **fields}


VALID = [
    pytest.param(doc(method="POST"), "POST", None, id="POST without a body (sends {})"),
    pytest.param(doc(method="POST", body={"q": "x", "n": 1}), "POST", {"q": "x", "n": 1}, id="POST with a body"),
    pytest.param(
        doc(method="POST", body=GRAPHQL_BODY, pagination=cursor(placement="body", cursor_param="variables.after")),
        "POST",
        GRAPHQL_BODY,
        id="GraphQL: cursor at variables.after, null placeholder",
    ),
    pytest.param(
        doc(method="POST", pagination=cursor(placement="body", cursor_param="page.cursor")),
        "POST",
        None,
        id="cursor at a path the body does not hold yet",
    ),
    pytest.param(
        doc(
            method="POST",
            body={"query": "", "hitsPerPage": 50},
            pagination={
                "type": "page_number",
                "placement": "body",
                "size_param": "hitsPerPage",
                "first_page": 0,
                "total_pages_path": "nbPages",
            },
        ),
        "POST",
        {"query": "", "hitsPerPage": 50},
        id="Algolia: page and hitsPerPage in the body",
    ),
    pytest.param(
        doc(
            method="POST",
            body={"query": {"match_all": {}}},
            pagination={
                "type": "offset",
                "placement": "body",
                "offset_param": "from",
                "limit_param": "size",
                "total_path": "hits.total.value",
            },
        ),
        "POST",
        {"query": {"match_all": {}}},
        id="Elasticsearch: from and size in the body",
    ),
    pytest.param(
        doc(method="POST", pagination={"type": "page_number", "placement": "body", "size_param": None}),
        "POST",
        None,
        id="page number in the body without a size",
    ),
    pytest.param(doc(method="post", body={"q": "x"}), "POST", {"q": "x"}, id="post in lower case: POST"),
    pytest.param(doc(method="Get"), "GET", None, id="Get: GET"),
    pytest.param(doc(pagination=cursor(placement="query")), "GET", None, id="placement query on a GET"),
    pytest.param(doc(method="POST", pagination=cursor()), "POST", None, id="POST with the cursor in the query"),
    pytest.param(doc(method="POST", error_path="errors"), "POST", None, id="error_path"),
]


@pytest.mark.parametrize(("raw", "method", "body"), VALID)
def test_valid_post_configs_load(raw: Any, method: str, body: Any) -> None:
    source = parse_sources(raw, "sources.yaml").sources[0]
    assert (source.method, source.body) == (method, body)


WHERE = "sources.yaml: source 'api-x': "
INVALID = [
    pytest.param(
        doc(body={"q": "x"}),
        "body: Value error, a request body goes with method: POST only: add method: POST, "
        "or put the values in params (the query string)",
        id="a body on a GET",
    ),
    pytest.param(
        doc(method="GET", body={}),
        "body: Value error, a request body goes with method: POST only",
        id="an empty body on an explicit GET",
    ),
    pytest.param(doc(method="PUT"), "method: Input should be 'GET' or 'POST'", id="another method"),
    pytest.param(
        doc(method="POST", body=[1, 2]),
        "body: Value error, must be a JSON object (names to values), got a list",
        id="a body that is a list",
    ),
    pytest.param(
        doc(method="POST", body="q=x"),
        "body: Value error, must be a JSON object (names to values), got a string",
        id="a body that is text",
    ),
    pytest.param(
        doc(method="POST", body={"range": {"since": date(2026, 1, 1)}}),
        "body: Value error, the value at 'range.since' is a date (quote it to send it as text), not a JSON value",
        id="an unquoted YAML date in the body",
    ),
    pytest.param(
        doc(method="POST", body={"filters": [{1: "a"}]}),
        "body: Value error, the key 1 at 'filters.0' is not text: quote it",
        id="a key that is not text",
    ),
    pytest.param(
        doc(method="POST", body={"boost": float("nan")}),
        "body: Value error, the value at 'boost' is nan, which JSON cannot carry",
        id="a number JSON cannot carry",
    ),
    pytest.param(
        doc(pagination=cursor(placement="body", cursor_param="variables.after")),
        "pagination.placement: Value error, 'body' needs method: POST (the page's values go in the JSON body of "
        "a POST request): add method: POST, or use placement: query",
        id="placement body on a GET",
    ),
    pytest.param(
        doc(pagination=cursor(placement="form")),
        "pagination.placement: Input should be 'query' or 'body'",
        id="another placement",
    ),
    pytest.param(
        doc(
            method="POST", body={"variables": "x"}, pagination=cursor(placement="body", cursor_param="variables.after")
        ),
        "pagination.cursor_param: Value error, 'variables.after': the body template holds a string at 'variables', "
        "not an object, so 'after' cannot be set in it",
        id="a path through a string",
    ),
    pytest.param(
        doc(
            method="POST",
            body={"variables": {"after": None}},
            pagination=cursor(placement="body", cursor_param="variables.after.x"),
        ),
        "pagination.cursor_param: Value error, 'variables.after.x': the body template holds null at "
        "'variables.after', not an object, so 'x' cannot be set in it: write {} there, or leave it out",
        id="a path through null",
    ),
    pytest.param(
        doc(method="post", body={"q": None}, pagination=cursor(placement="body", cursor_param="q.after")),
        "pagination.cursor_param: Value error, 'q.after': the body template holds null at 'q', not an object",
        id="a path through null, method in lower case",
    ),
    pytest.param(doc(method="put"), "method: Input should be 'GET' or 'POST'", id="another method in lower case"),
    pytest.param(
        doc(method="POST", body={"page": [1]}, pagination={"type": "page_number", "placement": "body"}),
        "pagination.page_param: Value error, 'page': the body template holds a list at 'page', "
        "which the page's value would replace",
        id="a path onto a list",
    ),
    pytest.param(
        doc(
            method="POST",
            body={"page": {"size": 10}},
            pagination={"type": "page_number", "placement": "body", "size_param": None},
        ),
        "pagination.page_param: Value error, 'page': the body template holds an object at 'page', "
        "which the page's value would replace",
        id="a path onto an object",
    ),
    pytest.param(
        doc(
            method="POST",
            body={"a": {"b": 1}},
            pagination={"type": "offset", "placement": "body", "offset_param": "a.b.c", "total_path": "t"},
        ),
        "pagination.offset_param: Value error, 'a.b.c': the body template holds a number at 'a.b', not an object, "
        "so 'c' cannot be set in it",
        id="a path through a number",
    ),
    pytest.param(
        doc(method="POST", pagination={"type": "page_number", "placement": "body", "size_param": "page.size"}),
        "pagination.size_param: Value error, page_param 'page' and size_param 'page.size' overlap in the body: "
        "give each its own path",
        id="one path inside another",
    ),
    pytest.param(
        doc(
            method="POST",
            pagination={
                "type": "offset",
                "placement": "body",
                "offset_param": "n",
                "limit_param": "n",
                "total_path": "t",
            },
        ),
        "pagination.limit_param: Value error, offset_param 'n' and limit_param 'n' overlap in the body: "
        "give each its own path",
        id="the same path twice",
    ),
    pytest.param(
        doc(method="POST", pagination=cursor(placement="body", cursor_param="variables..after")),
        "pagination.cursor_param: Value error, 'variables..after': with placement: body, cursor_param is a dotted "
        "path into the JSON body (e.g. variables.after), with no empty part",
        id="a path with an empty part",
    ),
    pytest.param(
        doc(method="POST", error_path="errors[0]"),
        "error_path: String should match pattern",
        id="error_path that is not a dotted path",
    ),
    pytest.param(doc(error_path=""), "error_path: String should have at least 1 character", id="empty error_path"),
]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_post_configs_say_file_source_and_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(raw, "sources.yaml")
    assert WHERE + message in str(raised.value)
