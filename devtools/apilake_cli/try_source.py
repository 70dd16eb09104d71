"""`apilake sources try NAME`: page 1 of a source from the real API, read as a worker and the planner would.

Read only, and no AWS: the credentials come from ``--secret NAME=VALUE`` (never printed: a credential in the
query string shows as ``***``, a credential header by its name only). The request is the worker's
(apilake.pagination), fetched with the source's retries and timeouts (apilake.http); the records, the total,
cursor or next link are read by the worker's own code, and what does not match the config is said with its
reason, as the worker would fail the page::

    $ apilake sources try orders --secret apilake/vendor=...
    request   GET https://api.example.com/v1/orders?limit=100&api_key=***
    response  200, 48,213 bytes, 212 ms
    records   100 at 'data'
    ...

Exit codes: 0 the config matches page 1; 1 it does not (the reason is printed); 2 bad input, a secret not
given, or an HTTP error (a 4xx, a 5xx or 429 after the source's retries, a timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import requests

from apilake.auth import CredentialStore
from apilake.children import announced, bind, child_shard, parent_values
from apilake.config import Source, SourcesFile, load_sources
from apilake.exceptions import ApilakeError, BadResponseError
from apilake.http import Deadline, VendorClient, new_session
from apilake.incremental import parse_value, window_shard
from apilake.lake import page_key
from apilake.messages import WorkItem
from apilake.observability import logger
from apilake.pagination import NextPage, Paginator, VendorPage, paginator_for
from apilake.parent_config import children_of
from apilake.planner import PlanRequest, shards_for
from apilake.records import extract_records, find_optional
from apilake_cli.develop import parse_secrets
from apilake_cli.exits import Exit
from apilake_cli.output import print_json

RUN_ID = "try"
FIRST_RECORD_CHARS = 600
TOP_LEVEL_KEYS = 12


@dataclass
class Attempt:
    """What trying one source found; ``problem``: why its config does not match the response (exit 1),
    ``error``: why page 1 could not be fetched (exit 2)."""

    source: str
    pagination: str
    mode: str
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    records: dict[str, Any] | None = None
    next: dict[str, Any] | None = None
    key: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    error: str | None = None
    first_record: Any = field(default=None, repr=False)  # whole, for a child's placeholders (not printed)

    @property
    def exit(self) -> Exit:
        return Exit.ERROR if self.error else Exit.NOT_DONE if self.problem else Exit.DONE

    def document(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pagination": self.pagination,
            "mode": self.mode,
            "request": self.request,
            "response": self.response,
            "records": self.records,
            "next": self.next,
            "key": self.key,
            "plan": self.plan,
            "notes": self.notes,
            "matches": self.exit == Exit.DONE,
            "problem": self.problem,
            "error": self.error,
            "exit": int(self.exit),
        }


def add_try_command(actions: argparse._SubParsersAction[argparse.ArgumentParser], default_file: Path) -> None:
    """The `sources try` subcommand (main.py's `sources` group)."""
    command = actions.add_parser(
        "try",
        help="fetch page 1 of a source from the real API (read only, no AWS) and show what a worker and the "
        "planner would make of it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("name", help="the source to try")
    command.add_argument("--sources", type=Path, default=default_file, help="the sources file (default: %(default)s)")
    command.add_argument(
        "--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret the source's auth reads"
    )
    command.add_argument("--shard", help="a daily source's shard to try, YYYY-MM-DD (default: the run's last)")
    command.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="PLACEHOLDER=VALUE",
        help="a child source's placeholder value (default: from the first record of its parent's page 1)",
    )
    command.add_argument("--timeout", type=float, default=60, help="give up after SECONDS (default %(default)s)")
    command.add_argument("--json", action="store_true", help="print one JSON document (stable keys) for scripts")
    command.set_defaults(func=cmd_sources_try)


def cmd_sources_try(args: argparse.Namespace) -> int:
    sources = load_sources(args.sources)
    source = sources.get(args.name)
    given = _pairs(args.parent, "--parent")
    if given and source.parent is None:
        raise ApilakeError(f"--parent: source '{source.name}' is not a child source (it has no parent:)")
    if args.shard is not None and (source.sharding.type != "daily" or not _is_day(args.shard)):
        raise ApilakeError(f"--shard {args.shard!r}: a day (YYYY-MM-DD) of a source with sharding: daily")
    store = CredentialStore.from_values(parse_secrets(args.secret))
    deadline = _deadline(args.timeout)
    # Quiet: the HTTP layer's logs (its retries) on stderr; its metrics (EMF documents on stdout) dropped.
    with _logs_to_stderr(), contextlib.redirect_stdout(io.StringIO()), new_session() as session:
        attempt = try_source(sources, source, store, session, deadline, given, args.shard)
    if args.json:
        print_json(attempt.document())
    else:
        print_attempt(attempt)
    return attempt.exit


def try_source(
    sources: SourcesFile,
    source: Source,
    store: CredentialStore,
    session: requests.Session,
    deadline: Deadline,
    given_parent: dict[str, str] | None = None,
    shard: str | None = None,
    today: date | None = None,
) -> Attempt:
    """Page 1 of ``source`` fetched and read as the worker and the planner would."""
    today = today or datetime.now(UTC).date()
    paginator = paginator_for(source)
    attempt = Attempt(source.name, source.pagination.type, "fanout" if paginator.fans_out else "chain")
    shards = _shards(source, today)
    item = WorkItem(run_id=RUN_ID, source=source.name, ingestion_date=today, shard=shard or shards[-1], page=1)
    if shard is not None and shard not in shards:
        attempt.notes.append(f"shard {shard} is not one this run's planner would plan ({_listed(shards)})")
    if source.parent is not None:
        values = given_parent or _values_from_parent(sources, source, store, session, deadline, attempt)
        if values is None:
            return attempt
        missing = sorted(set(source.parent.fields) - set(values))
        if missing:
            attempt.error = f"child source '{source.name}' needs --parent {' '.join(f'{m}=...' for m in missing)}"
            return attempt
        item = item.model_copy(update={"shard": child_shard(values), "parent_values": values})
        source = bind(source, item)
        paginator = paginator_for(source)
    client = VendorClient(source, session, store.for_source(source))
    statuses: list[int] = []
    session.hooks["response"] = [lambda response, *_, **__: statuses.append(response.status_code)]
    request = paginator.request(item)
    try:
        credentials = client.credentials.current()
        prepared = session.prepare_request(
            requests.Request(request.method, request.url, params={**request.params, **credentials.params})
        )
        attempt.request = {
            "method": request.method,
            "url": client.credentials.redact(prepared.url or request.url),
            "headers": dict(source.headers),
            "credential_headers": sorted(credentials.headers),
            "body": request.body,
        }
        page = client.fetch(request, deadline)
    except BadResponseError as exc:  # a 2xx that is not JSON: not what the config reads
        attempt.response = {"status": statuses[-1] if statuses else None}
        attempt.problem = str(exc)
        return attempt
    except ApilakeError as exc:
        attempt.response = {"status": statuses[-1]} if statuses else None
        attempt.error = str(exc)
        return attempt
    finally:
        session.hooks["response"] = []
    attempt.response = {
        "status": statuses[-1] if statuses else None,
        "bytes": page.size_bytes,
        "latency_ms": round(page.latency_ms),
        "attempts": page.attempts,
    }
    attempt.key = page_key(source.name, item.ingestion_date, item.shard, 1)
    read_page(sources, source, paginator, item, page, attempt, client)
    if not attempt.problem:
        _plan(source, paginator, shards, item, attempt)
    return attempt


def read_page(
    sources: SourcesFile,
    source: Source,
    paginator: Paginator,
    item: WorkItem,
    page: VendorPage,
    attempt: Attempt,
    client: VendorClient,
) -> None:
    """The records, the way on, and what the page's records announce, read by the worker's code."""
    try:
        records = extract_records(page.document, source.records_path)
    except BadResponseError as exc:
        attempt.problem = f"{exc}{_keys_hint(page.document)}"
        return
    first = attempt.first_record = records[0] if records else None
    attempt.records = {"path": source.records_path, "count": len(records), "first": _shown(first)}
    _check_record(source, first, attempt)
    try:
        if paginator.fans_out:
            fan = paginator.fan_out(page if paginator.needs_probe else None)
            attempt.next = {"pages": fan.pages, "total": fan.records, "page_size": fan.page_size}
            if fan.pages == 0:
                attempt.notes.append("the vendor states no record for this shard: the planner plans no page of it")
            if fan.capped:
                attempt.notes.append(f"the vendor caps the page size: {fan.page_size}, not the configured one")
        else:
            following = paginator.next_page(item, page, records)
            attempt.next = _following(source, paginator, page, following, client)
            if following is None:
                attempt.notes.append("the chain ends at page 1 (no next page): 1 page in all")
            has_more_path = getattr(source.pagination, "has_more_path", None)
            if has_more_path and find_optional(page.document, has_more_path) is None:
                attempt.notes.append(f"has_more_path {has_more_path!r}: not in the response (the cursor alone decides)")
        for child in children_of(sources.sources, source.name):
            attempt.plan.setdefault("children", {})[child.name] = len(announced(item, child, records))
    except BadResponseError as exc:
        attempt.problem = str(exc)


def _following(
    source: Source, paginator: Paginator, page: VendorPage, following: NextPage | None, client: VendorClient
) -> dict[str, Any]:
    """Page 2 as the next work item would carry it: a cursor, a URL (credentials stripped), or just its number."""
    pagination = source.pagination
    if following is None:
        return {"page": None}
    cursor = following.cursor
    if cursor is not None and paginator.cursor_is_url:
        return {"page": 2, "next_url": client.credentials.redact(client.credentials.strip(cursor))}
    shown: dict[str, Any] = {"page": 2, "cursor": cursor}
    has_more_path = getattr(pagination, "has_more_path", None)
    if has_more_path is not None:
        shown["has_more"] = find_optional(page.document, has_more_path)
    return shown


def _check_record(source: Source, record: Any, attempt: Attempt) -> None:
    """What a worker would not fail on but is likely a mistake: a configured field absent from page 1."""
    if record is None:
        attempt.notes.append("page 1 holds no record: the record fields (record_id_path, ...) are not checked")
        return
    checks = {"record_id_path": source.record_id_path}
    if source.incremental is not None:
        checks["incremental.cursor_path"] = source.incremental.cursor_path
    for name, path in checks.items():
        if path and find_optional(record, path) is None:
            attempt.notes.append(f"{name} {path!r}: the first record has no value there")


def _plan(source: Source, paginator: Paginator, shards: list[str], item: WorkItem, attempt: Attempt) -> None:
    """What the planner would enqueue for this source in a run planned today."""
    if source.parent is not None:
        attempt.plan.update(
            {
                "shards": [item.shard],
                "messages": 1,
                "how": f"page 1 of one child shard per record of '{source.parent.source}' (sent by its workers)",
            }
        )
        return
    plan: dict[str, Any] = {"shards": shards}
    if not paginator.fans_out:
        plan.update(messages=len(shards), how="page 1 of each shard; each landed page enqueues the next")
    elif len(shards) == 1:
        pages = attempt.next["pages"] if attempt.next else 1
        plan.update(messages=pages, how=f"every page at once ({pages})")
    else:
        pages = attempt.next["pages"] if attempt.next else 1
        plan.update(
            messages=None,
            how=f"every page of each shard at once, each shard probed: {pages} for shard {item.shard}",
        )
    attempt.plan.update(plan)


def _shards(source: Source, today: date) -> list[str]:
    """The shards a run planned today would have (an incremental source: its first run's, from initial_value)."""
    if source.incremental is not None:
        return [window_shard(parse_value(source.incremental, source.incremental.initial_value))]
    return shards_for(source, PlanRequest(run_id=RUN_ID, ingestion_date=today, trigger="manual"))


def _values_from_parent(
    sources: SourcesFile,
    child: Source,
    store: CredentialStore,
    session: requests.Session,
    deadline: Deadline,
    attempt: Attempt,
) -> dict[str, str] | None:
    """A child's placeholder values from the first record of its parent's page 1 (the parent tried first)."""
    assert child.parent is not None
    parent = sources.get(child.parent.source)
    if parent.parent is not None:
        attempt.error = (
            f"'{parent.name}' is a child source too: give --parent for each of {_listed(child.parent.fields)}"
        )
        return None
    tried = try_source(sources, parent, store, session, deadline)
    if tried.error or tried.problem:
        attempt.error = f"parent '{parent.name}': {tried.error or tried.problem}"
        return None
    first = tried.first_record
    if first is None:
        attempt.error = f"parent '{parent.name}' has no record on page 1: give --parent values"
        return None
    try:
        values = parent_values(child, first, f"the first record of '{parent.name}' page 1")
    except BadResponseError as exc:
        attempt.problem = str(exc)
        return None
    attempt.notes.append(f"placeholders from the first record of '{parent.name}' page 1: {values}")
    return values


def _shown(record: Any) -> Any:
    """The first record, cut to FIRST_RECORD_CHARS of JSON text when longer (then a string)."""
    text = json.dumps(record, ensure_ascii=False)
    return record if len(text) <= FIRST_RECORD_CHARS else text[:FIRST_RECORD_CHARS] + "..."


def _keys_hint(document: Any) -> str:
    if isinstance(document, dict):
        keys = list(document)[:TOP_LEVEL_KEYS]
        return f" (the response is an object with the keys: {', '.join(keys) or 'none'})"
    return f" (the response is a JSON {type(document).__name__})"


def _is_day(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def _listed(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _pairs(pairs: list[str], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ApilakeError(f"{option} {name!r}: expected NAME=VALUE")
        found[name] = value
    return found


def _deadline(seconds: float) -> Deadline:
    ends = time.monotonic() + seconds
    return Deadline(lambda: int((ends - time.monotonic()) * 1000), 0.0)


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """The HTTP layer's logs (its retries, INFO, whatever level an earlier command of this process left) on stderr,
    so that stdout is the command's own (one JSON document)."""
    handler = logger.registered_handler
    if not isinstance(handler, logging.StreamHandler):
        yield
        return
    stream = handler.setStream(sys.stderr)
    level = logger.log_level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)
        if stream is not None:  # None: it was stderr already
            handler.setStream(stream)


def print_attempt(attempt: Attempt) -> None:
    print(f"source    {attempt.source} ({attempt.pagination} pagination, {attempt.mode})")
    if attempt.request:
        request = attempt.request
        print(f"request   {request['method']} {request['url']}")
        headers = [*request["headers"], *(f"{name} (credential, not shown)" for name in request["credential_headers"])]
        if headers:
            print(f"          headers: {', '.join(headers)}")
        if request["body"] is not None:
            print(f"          body: {json.dumps(request['body'], ensure_ascii=False)}")
    if attempt.response:
        response = attempt.response
        figures = [f"{response['status']}"] + (
            [f"{response['bytes']:,} bytes", f"{response['latency_ms']} ms"] if "bytes" in response else []
        )
        print(f"response  {', '.join(figures)}")
    if attempt.records:
        records = attempt.records
        print(f"records   {records['count']} at {records['path']!r}")
        if records["first"] is not None:
            print(f"first     {json.dumps(records['first'], ensure_ascii=False)}")
    if attempt.next:
        print(f"next      {_next_text(attempt.next)}")
    if attempt.key:
        print(f"key       {attempt.key}")
    if attempt.plan:
        print(f"planner   {_plan_text(attempt.plan)}")
    for note in attempt.notes:
        print(f"note      {note}")
    if attempt.problem:
        print(f"does not match: {attempt.problem}")
    if attempt.error:
        print(f"error: {attempt.error}", file=sys.stderr)


def _next_text(following: dict[str, Any]) -> str:
    if "pages" in following:
        total = f", {following['total']} records" if following.get("total") is not None else ""
        return f"{following['pages']} pages in all{total} (page size {following['page_size']})"
    if following.get("page") is None:
        return "none: page 1 is the last"
    if "next_url" in following:
        return f"page 2 at {following['next_url']}"
    more = f" (has_more: {json.dumps(following['has_more'])})" if "has_more" in following else ""
    cursor = f" with cursor {following['cursor']!r}" if following.get("cursor") is not None else ""
    return f"page 2{cursor}{more}"


def _plan_text(plan: dict[str, Any]) -> str:
    shards = plan.get("shards", [])
    messages = plan.get("messages")
    counted = f"{messages} message{'s' if messages != 1 else ''}" if messages is not None else "messages"
    text = f"{counted} over {len(shards)} shard{'s' if len(shards) != 1 else ''} ({_listed(shards[:5])}"
    text += ", ...)" if len(shards) > 5 else ")"
    text += f": {plan.get('how')}"
    for child, count in plan.get("children", {}).items():
        text += f"; {count} page-1 work item{'s' if count != 1 else ''} of child '{child}' from page 1's records"
    return text
