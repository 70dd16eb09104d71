"""A fake vendor whose lists are POST requests with a JSON body, on 127.0.0.1:

- ``POST /search/<ds>`` answers as Elasticsearch's ``_search`` does: ``{"size": S, "query": {"match_all": {}},
  "sort": [{"seq": "asc"}, {"id": "asc"}], "search_after": [<sort of the last hit>]}`` (or ``"from": O`` instead
  of ``search_after``) gives ``{"hits": {"total": {"value": T}, "hits": [{"_id", "_source", "sort"}...]}}``; an
  empty page ends a search_after walk;
- ``POST /graphql/<ds>`` answers as a GraphQL connection does (GitHub's shape): ``{"query": "... items(first:
  $first, after: $after) ...", "variables": {"first": N, "after": C}}`` gives ``{"data": {"items": {"pageInfo":
  {"hasNextPage", "endCursor"}, "nodes": [...]}}}``; a query that does not ask for ``items`` gets a 200 with an
  ``errors`` array and no ``data``, as GraphQL servers answer (``echo_key=True``: its message quotes the API key
  it was sent, as some vendors' do: apilake must not repeat it).

Each dataset notes the bodies it was asked (``asked``); faults, rate limits and the API key work as in
:mod:`apilake_dev.vendors.fake`, the page of a request being the one its offset falls in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from apilake_dev.vendors import fake
from apilake_dev.vendors.fake import Dataset, FakeVendor, decode_cursor, encode_cursor

ENDPOINTS = ("search", "graphql")
SORT = [{"seq": "asc"}, {"id": "asc"}]
MAX_SIZE = 10_000


@dataclass
class SearchLikeDataset(Dataset):
    """A dataset served by POST; ``asked``: (endpoint, body) of every request that reached it, in order."""

    asked: list[tuple[str, Any]] = field(default_factory=list, repr=False, compare=False)

    def bodies(self, endpoint: str) -> list[Any]:
        return [body for asked_at, body in self.asked if asked_at == endpoint]


class _BadRequestError(ValueError):
    """The request body is not what the endpoint takes: a 400 with this text."""


class _Handler(fake._Handler):
    echo_key = False

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.drip = None
        state = self.server.state
        path = urlsplit(self.path).path
        with state.lock:
            state.seen_urls.append(self.path)
        segments = [s for s in path.split("/") if s]
        dataset = state.datasets.get(segments[1]) if len(segments) == 2 and segments[0] in ENDPOINTS else None
        if not isinstance(dataset, SearchLikeDataset):
            return self._json(404, {"error": f"no such endpoint {path}"})
        endpoint = segments[0]
        offered = (self.headers.get("X-Api-Key"), self.headers.get("Authorization", "")[7:])
        needs_key = state.api_key is not None and (state.protected is None or dataset.name in state.protected)
        if needs_key and state.api_key not in offered:
            return self._json(401, {"error": "missing or wrong API key"})
        if self.headers.get("Content-Type") != "application/json":
            return self._json(415, {"error": "send application/json"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with state.lock:
                dataset.asked.append((endpoint, body))
            start, size = self._window(endpoint, body)
        except (_BadRequestError, ValueError) as exc:
            return self._json(400, {"error": str(exc)})
        fault = state.take_fault(endpoint, dataset.name, start // size + 1)
        if fault is not None and self._fault(fault):
            return None
        records = dataset.serve({})
        if endpoint == "search":
            return self._json(200, _search_answer(dataset.name, records, start, size))
        if "items" not in body["query"]:
            asked = re.search(r"\{\s*(\w+)", body["query"])
            message = f"Cannot query field '{asked[1] if asked else ''}' on type 'Query'."
            if self.echo_key:
                message += f" (asked with API key {offered[0] or offered[1]})"
            return self._json(200, {"errors": [{"message": message, "locations": [{"line": 1, "column": 3}]}]})
        return self._json(200, _graphql_answer(records, start, size))

    def _window(self, endpoint: str, body: Any) -> tuple[int, int]:
        """(index of the first record, page size) that ``body`` asks for."""
        if not isinstance(body, dict):
            raise _BadRequestError("the body must be a JSON object")
        if endpoint == "graphql":
            variables = body.get("variables") or {}
            if not isinstance(body.get("query"), str) or not isinstance(variables, dict):
                raise _BadRequestError("a GraphQL request is {query: text, variables: object}")
            after = variables.get("after")
            if after is not None and not isinstance(after, str):
                raise _BadRequestError(f"Variable $after of type String got {after!r}")
            return (decode_cursor(after) + 1 if after is not None else 0), _size(variables.get("first", 10))
        if body.get("query") != {"match_all": {}}:
            raise _BadRequestError(f"unsupported query {body.get('query')!r}")
        size = _size(body.get("size", 10))
        if "search_after" in body:
            if "from" in body:
                raise _BadRequestError("[from] parameter must be set to 0 when [search_after] is used")
            if body.get("sort") != SORT:
                raise _BadRequestError(f"search_after needs the sort {SORT}")
            after = body["search_after"]
            if not (isinstance(after, list) and len(after) == 2 and isinstance(after[0], int)):
                raise _BadRequestError(f"search_after must hold the sort values of a hit, got {after!r}")
            return after[0] + 1, size
        start = body.get("from", 0)
        if not isinstance(start, int) or start < 0 or start % size:
            raise _BadRequestError("from must be a multiple of size")
        return start, size


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise _BadRequestError(f"the page size must be a number from 1 to {MAX_SIZE}, got {value!r}")
    return value


def _search_answer(index: str, records: list[dict[str, Any]], start: int, size: int) -> dict[str, Any]:
    hits = [
        {"_index": index, "_id": r["id"], "_score": None, "_source": r, "sort": [r["seq"], r["id"]]}
        for r in records[start : start + size]
    ]
    return {"took": 1, "timed_out": False, "hits": {"total": {"value": len(records), "relation": "eq"}, "hits": hits}}


def _graphql_answer(records: list[dict[str, Any]], start: int, size: int) -> dict[str, Any]:
    nodes = records[start : start + size]
    page_info = {
        "hasNextPage": start + size < len(records),
        "endCursor": encode_cursor(nodes[-1]["seq"]) if nodes else None,
    }
    return {"data": {"items": {"totalCount": len(records), "pageInfo": page_info, "nodes": nodes}}}


class SearchLikeVendor(FakeVendor):
    """The fake vendor, answering POST searches and GraphQL queries over its :class:`SearchLikeDataset`s."""

    def __init__(self, datasets: list[Dataset], *, echo_key: bool = False, **options: Any) -> None:
        super().__init__(datasets, **options)
        self._server.RequestHandlerClass = _EchoingHandler if echo_key else _Handler


class _EchoingHandler(_Handler):
    echo_key = True
