"""`apilake curate --stack-name S --source X [--from D] [--to D]`: curate a source's ingestion dates again on the
deployed stack, after a type change was accepted in its ``columns`` (the older dates' Parquet files keep the old
physical type, which Athena cannot read as the new one). Each date found under ``raw/source=<X>/`` in the range is
curated as the completeness check curates a run's date (:mod:`apilake.curation`: the date's lock, an UNLOAD into a
staging prefix, swapped into the curated prefix once it SUCCEEDED), at most :data:`apilake.curation.MAX_STARTS`
queries at a time, followed until every date is done or failed (a failed one is started once again); the source's
views are created again when their DDL changed."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, date, datetime
from pathlib import Path

from apilake.config import Source, load_sources
from apilake.curation import MAX_ATTEMPTS, Curation, CurationSummary, State, request_tasks
from apilake.exceptions import ApilakeError
from apilake.lake import source_prefix
from apilake.observability import logger
from apilake_cli.exits import Exit
from apilake_cli.output import format_table, print_json
from apilake_cli.stack import ATHENA_WORKGROUP, GLUE_DATABASE, Stack

REQUEST_PREFIX = "curate-"
_DATE_FOLDER = "ingestion_date="


def request_id(now: datetime) -> str:
    """The request's id, which its markers and staging prefixes carry: ``curate-<UTC time>``."""
    return f"{REQUEST_PREFIX}{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def curated_source(path: Path, name: str) -> Source:
    """The source ``name`` of the sources file at ``path``; an error unless it declares ``columns``."""
    source = load_sources(path).get(name)
    if not source.columns:
        raise ApilakeError(f"{path}: source {name!r} declares no columns: it has no curated table to curate")
    return source


def ingestion_dates(stack: Stack, source: str, first: date | None, last: date | None) -> list[date]:
    """The ingestion dates under ``raw/source=<source>/`` from ``first`` to ``last`` (both included, if given)."""
    prefix = source_prefix(source)
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix, Delimiter="/")
    found: list[date] = []
    for page in pages:
        for folder in page.get("CommonPrefixes", []):
            name = folder["Prefix"][len(prefix) :].rstrip("/")
            if not name.startswith(_DATE_FOLDER):
                continue
            try:
                day = date.fromisoformat(name[len(_DATE_FOLDER) :])
            except ValueError:
                continue  # not a lake folder: not a date
            if (first is None or day >= first) and (last is None or day <= last):
                found.append(day)
    if not found:
        where = f"s3://{stack.bucket}/{prefix}"
        span = f" from {first or 'the first'} to {last or 'the last'}" if first or last else ""
        raise ApilakeError(f"no ingestion date of {source!r} under {where}{span}")
    return sorted(found)


def ended(summary: CurationSummary) -> bool:
    """Every date done, or failed with no attempt left; no view DDL running."""
    runs = all(
        run.state is State.DONE or (run.state is State.FAILED and run.attempt >= MAX_ATTEMPTS) for run in summary.runs
    )
    return runs and all(state not in (State.STARTING, State.RUNNING) for state in summary.views.values())


def cmd_curate(args: argparse.Namespace) -> int:
    if args.from_ and args.to and args.from_ > args.to:
        raise ApilakeError(f"curate: --from {args.from_} is after --to {args.to}")
    source = curated_source(args.sources, args.source)
    stack = Stack.from_args(args)
    days = ingestion_dates(stack, source.name, args.from_, args.to)
    curation = Curation(
        stack.s3, stack.bucket, stack.client("athena"), stack.output(ATHENA_WORKGROUP), stack.output(GLUE_DATABASE)
    )
    now = datetime.now(UTC)
    tasks = request_tasks(source, days, request_id(now), now)
    level = logger.log_level
    logger.setLevel(logging.CRITICAL)  # the curation's JSON logs are the Lambda's; this command prints its own
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            summary = curation.advance(tasks, datetime.now(UTC), emit=False)
            if ended(summary) or time.monotonic() >= deadline:
                break
            if not args.json:
                states = [run.state.value if run.state else "waiting" for run in summary.runs]
                print(f"{source.name}: " + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))
            time.sleep(args.interval)
    finally:
        logger.setLevel(level)
    if not ended(summary):
        code = Exit.TIMED_OUT
    else:
        code = Exit.DONE if all(run.state is State.DONE for run in summary.runs) else Exit.NOT_DONE
    if args.json:
        print_json({"request_id": tasks[0].run_id, "exit": int(code), **summary.model_dump(mode="json")})
    else:
        rows = [
            (run.ingestion_date.isoformat(), run.state.value if run.state else "waiting", run.attempt, run.reason)
            for run in summary.runs
        ]
        print(format_table(["ingestion_date", "state", "attempt", "reason"], rows))
        if code is Exit.TIMED_OUT:
            print(f"still running at --timeout: run the command again to finish them (request {tasks[0].run_id})")
    return code
