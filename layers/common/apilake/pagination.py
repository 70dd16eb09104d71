"""One strategy class per pagination style: what the request for a page is, and whether there is a next one.

Two families:
- *fan-out* styles (page number or offset with a total, single page): the planner learns the page
  count by probing the first page and enqueues every page at once;
- *chain* styles (cursor, next URL, Link header, page number without a total): a worker that lands
  page N enqueues page N+1, carrying what the vendor said the next request is.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, NamedTuple
from urllib.parse import urljoin, urlsplit

from requests.utils import parse_header_links

from apilake.config import DailySharding, Source
from apilake.exceptions import BadResponseError
from apilake.incremental import is_window_shard, window_params
from apilake.messages import MAX_CURSOR_CHARS, MAX_PAGES_PER_SHARD, WorkItem
from apilake.pagination_config import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PageNumberPagination,
    SinglePagePagination,
)
from apilake.records import extract_records, find, find_optional
from apilake.request_body import JsonObject, with_values


@dataclass(frozen=True)
class PageRequest:
    """An absolute URL, the query parameters to add to it, the method and (a POST) its JSON body."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    method: Literal["GET", "POST"] = "GET"
    body: JsonObject | None = None


@dataclass(frozen=True)
class VendorPage:
    """A successful response, parsed; ``attempts``: the requests it took (retries included), ``throttled``:
    the 429s among their answers, ``latency_ms``: of the successful response; ``scrub``: blanks the credentials
    of the request that got it from a text (:meth:`apilake.auth.Credentials.scrub`), for an error that quotes
    what the vendor said."""

    document: Any
    headers: Mapping[str, str]
    url: str
    size_bytes: int
    latency_ms: float
    attempts: int = 1
    throttled: int = 0
    scrub: Callable[[str], str] = field(default=str, repr=False, compare=False)


# A NamedTuple, not a frozen dataclass: as immutable, a tenth of the cost to create at import (the cold start).
class FanOut(NamedTuple):
    """What the planner learns of a fan-out shard: its pages and, where the vendor states them, its records
    and the page size it really uses (``capped``: less than configured, and the pages are planned with it)."""

    pages: int
    records: int | None = None
    page_size: int | None = None
    capped: bool = False


class NextPage(NamedTuple):  # a NamedTuple too
    """The chain goes on; ``cursor`` is what the next work item carries (None: the page number is enough)."""

    cursor: str | None


class Paginator(ABC):
    #: True when the planner can enumerate every page up front.
    fans_out: bool = False
    #: True when the planner must fetch the first page to learn the page count.
    needs_probe: bool = False
    #: True when a work item's cursor is a URL (credentials are stripped from it before it is queued).
    cursor_is_url: bool = False

    def __init__(self, source: Source) -> None:
        self.source = source
        #: True when the page's values go in the POST's JSON body (``placement: body``), not in the query string.
        self.in_body = getattr(source.pagination, "placement", "query") == "body"

    def request(self, item: WorkItem) -> PageRequest:
        """The request for ``item``'s page: the source's URL, static params, the shard's window, the page's
        values: in the query string, or (``placement: body``) at their paths in a copy of the POST's body."""
        params = dict(self.source.params)
        params.update(shard_params(self.source, item.shard))
        values = self.page_values(item)
        if not self.in_body:
            params.update({name: str(value) for name, value in values.items()})
        return PageRequest(url=self.source.url, params=params, method=self.source.method, body=self.body(values))

    def body(self, values: dict[str, Any]) -> JsonObject | None:
        """A POST's body: its template, with the page's values set at their paths when they go in the body."""
        if self.source.method != "POST":
            return None
        return with_values(self.source.body, values if self.in_body else {})

    def page_values(self, item: WorkItem) -> dict[str, Any]:
        """The page's values by parameter name (or body path): numbers, and the cursor as the vendor gave it."""
        return {}

    def page_count(self, page: VendorPage | None) -> int:
        """For fan-out styles: how many pages there are, from the probed first page."""
        raise NotImplementedError(f"{type(self).__name__} does not fan out")

    def fan_out(self, page: VendorPage | None) -> FanOut:
        """For fan-out styles: the pages to plan and what to reconcile them with (decision 28)."""
        return FanOut(pages=self.page_count(page))

    @abstractmethod
    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        """For chain styles: the next page, or None when ``item`` was the last one."""


class PageNumberPaginator(Paginator):
    def __init__(self, source: Source, config: PageNumberPagination) -> None:
        super().__init__(source)
        self.config = config
        self.fans_out = self.needs_probe = config.total_path is not None or config.total_pages_path is not None

    def page_values(self, item: WorkItem) -> dict[str, Any]:
        values: dict[str, Any] = {self.config.page_param: self.config.first_page + item.page - 1}
        if self.config.size_param:
            values[self.config.size_param] = item.page_size or self.config.page_size
        return values

    def page_count(self, page: VendorPage | None) -> int:
        assert page is not None
        if self.config.total_pages_path is not None:
            return _checked_count(find(page.document, self.config.total_pages_path, "total pages"), "total pages")
        assert self.config.total_path is not None
        total = _checked_count(find(page.document, self.config.total_path, "total"), "total")
        return _checked_count(math.ceil(total / self.config.page_size), "page count")

    def fan_out(self, page: VendorPage | None) -> FanOut:
        assert page is not None
        if self.config.total_path is not None:
            total = _checked_count(find(page.document, self.config.total_path, "total"), "total")
            return _sized(self.source, page, total, self.config.page_size)
        # The vendor states its pages: they are what they are; page 1 tells the size of all but the last.
        pages, held = self.page_count(page), len(extract_records(page.document, self.source.records_path))
        size = held if pages > 1 and 0 < held < self.config.page_size else self.config.page_size
        return FanOut(pages=pages, page_size=size, capped=size != self.config.page_size)

    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        if self.fans_out or not records:
            return None
        if self.config.stop_on_short_page and len(records) < self.config.page_size:
            return None
        return NextPage(cursor=None)


class OffsetPaginator(Paginator):
    fans_out = True
    needs_probe = True

    def __init__(self, source: Source, config: OffsetPagination) -> None:
        super().__init__(source)
        self.config = config

    def page_values(self, item: WorkItem) -> dict[str, Any]:
        limit = item.page_size or self.config.limit
        return {self.config.offset_param: (item.page - 1) * limit, self.config.limit_param: limit}

    def page_count(self, page: VendorPage | None) -> int:
        assert page is not None
        total = _checked_count(find(page.document, self.config.total_path, "total"), "total")
        return _checked_count(math.ceil(total / self.config.limit), "page count")

    def fan_out(self, page: VendorPage | None) -> FanOut:
        assert page is not None
        total = _checked_count(find(page.document, self.config.total_path, "total"), "total")
        return _sized(self.source, page, total, self.config.limit)

    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        return None


class CursorPaginator(Paginator):
    def __init__(self, source: Source, config: CursorPagination) -> None:
        super().__init__(source)
        self.config = config

    def page_values(self, item: WorkItem) -> dict[str, Any]:
        if item.cursor is None:
            return {}
        # In the body the cursor goes back as the vendor gave it (a string, a number, a list): carried as JSON.
        return {self.config.cursor_param: json.loads(item.cursor) if self.in_body else item.cursor}

    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        has_more = find_optional(page.document, self.config.has_more_path)
        if self.config.has_more_path is not None and has_more is False:
            return None
        if self.config.cursor_from != "body":
            return self._from_record(item, records, has_more)
        cursor = find_optional(page.document, self.config.cursor_path)
        if cursor is None or cursor == "":
            if has_more is True:
                raise BadResponseError(f"has_more is true but there is no cursor at {self.config.cursor_path!r}")
            return None
        return self._following(item, cursor, f"cursor at {self.config.cursor_path!r}")

    def _from_record(self, item: WorkItem, records: Sequence[Any], has_more: Any) -> NextPage | None:
        """Stripe's ``starting_after=<id of the last record>``: an empty page ends the chain, unless the vendor
        says there is more (a cursor taken from nothing would ask for the same page again)."""
        which = "last" if self.config.cursor_from == "last_record" else "first"
        if not records:
            if has_more is True:
                raise BadResponseError(
                    f"page {item.page} holds no record but has_more is true: no {which} record to take "
                    "the cursor from, stopping a loop"
                )
            return None
        field = self.config.cursor_field
        cursor = find_optional(records[-1] if which == "last" else records[0], field)
        if cursor is None or cursor == "":
            raise BadResponseError(f"the {which} record of page {item.page} has no {field!r} to take the cursor from")
        return self._following(item, cursor, f"{field!r} of the {which} record")

    def _following(self, item: WorkItem, cursor: Any, what: str) -> NextPage:
        if self.in_body and not isinstance(cursor, bool):  # any JSON value: carried as its JSON text
            cursor = _carried(json.dumps(cursor, separators=(",", ":"), ensure_ascii=False), "cursor")
        elif isinstance(cursor, bool) or not isinstance(cursor, str | int):
            raise BadResponseError(f"{what} is a {type(cursor).__name__}, not a cursor")
        else:
            cursor = _carried(str(cursor), "cursor")
        if cursor == item.cursor:
            raise BadResponseError(f"the vendor returned the same cursor again on page {item.page}: stopping a loop")
        return NextPage(cursor=cursor)


class _UrlChainPaginator(Paginator):
    """Shared by the styles whose next page is a URL: page 1 is the configured request, the others the URL."""

    cursor_is_url = True

    def request(self, item: WorkItem) -> PageRequest:
        if item.cursor is None:
            return super().request(item)
        return PageRequest(url=item.cursor, method=self.source.method, body=self.body({}))

    def _next(self, item: WorkItem, page: VendorPage, link: str | None) -> NextPage | None:
        if not link:
            return None
        try:
            url = _carried(urljoin(page.url, link), "next URL")
            parts = urlsplit(url)
        except ValueError:  # not the link itself in the reason: it may carry a query-string key
            raise BadResponseError("the next page's URL is not a URL that can be read") from None
        if (parts.scheme, parts.netloc) != self.source.origin:
            raise BadResponseError(
                f"the next page's URL points to {parts.scheme}://{parts.netloc}, not to the source's host"
            )
        if url == item.cursor:
            raise BadResponseError(f"the vendor returned the same next URL again on page {item.page}: stopping a loop")
        return NextPage(cursor=url)


class NextUrlPaginator(_UrlChainPaginator):
    def __init__(self, source: Source, config: NextUrlPagination) -> None:
        super().__init__(source)
        self.config = config

    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        link = find_optional(page.document, self.config.next_url_path)
        if link is not None and not isinstance(link, str):
            raise BadResponseError(f"next URL at {self.config.next_url_path!r} is a {type(link).__name__}")
        return self._next(item, page, link)


class LinkHeaderPaginator(_UrlChainPaginator):
    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        header = page.headers.get("Link") or page.headers.get("link")
        if not header:
            return None
        links = [link for link in parse_header_links(header) if "next" in link.get("rel", "").split()]
        return self._next(item, page, links[0]["url"] if links else None)


class SinglePagePaginator(Paginator):
    fans_out = True

    def page_count(self, page: VendorPage | None) -> int:
        return 1

    def next_page(self, item: WorkItem, page: VendorPage, records: Sequence[Any]) -> NextPage | None:
        return None


def paginator_for(source: Source) -> Paginator:
    config = source.pagination
    match config:
        case PageNumberPagination():
            return PageNumberPaginator(source, config)
        case OffsetPagination():
            return OffsetPaginator(source, config)
        case CursorPagination():
            return CursorPaginator(source, config)
        case NextUrlPagination():
            return NextUrlPaginator(source, config)
        case LinkHeaderPagination():
            return LinkHeaderPaginator(source)
        case SinglePagePagination():
            return SinglePagePaginator(source)


def shard_params(source: Source, shard: str) -> dict[str, str]:
    """The query parameters of a shard: a date shard's window [day, day + 1), an incremental run's window."""
    if source.incremental is not None and is_window_shard(shard):
        return window_params(source.incremental, shard)
    sharding = source.sharding
    if not isinstance(sharding, DailySharding) or shard == "all":
        return {}
    day = date.fromisoformat(shard)
    return {
        sharding.start_param: day.strftime(sharding.date_format),
        sharding.end_param: (day + timedelta(days=1)).strftime(sharding.date_format),
    }


def _sized(source: Source, page: VendorPage, total: int, configured: int) -> FanOut:
    """A shard whose vendor states its records: a first page that holds fewer than the configured size
    (and than the total) shows the size the vendor really uses, and the pages are planned with it, so
    that every record lands (decision 28). An empty first page says nothing of the size."""
    held = len(extract_records(page.document, source.records_path))
    size = held if 0 < held < min(configured, total) else configured
    pages = _checked_count(math.ceil(total / size), "page count")
    return FanOut(pages=pages, records=total, page_size=size, capped=size != configured)


def _carried(cursor: str, what: str) -> str:
    """``cursor``, if a work item can carry it."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadResponseError(
            f"the vendor's {what} is {len(cursor)} characters long, "
            f"more than the {MAX_CURSOR_CHARS} a work item carries"
        )
    return cursor


def _checked_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise BadResponseError(f"{what} is not a non-negative whole number: {value!r}")
    count = int(value)
    if (what == "page count" or what == "total pages") and count > MAX_PAGES_PER_SHARD:
        raise BadResponseError(f"{count} pages in one shard is more than the {MAX_PAGES_PER_SHARD} a shard may hold")
    return count
