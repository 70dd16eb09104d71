"""The operator commands: did a run finish (`status`), what is in a DLQ (`dlq peek`) and back to its
queue (`redrive`), SQL on Athena (`query --athena`), and `sources validate`; `run` and `backfill` are in
apilake_cli.runs, `report` in apilake_cli.runreport. They need the runtime package and
boto3 only (`pip install .`).

A deployed stack is found by its name (apilake_cli.stack): the bucket, stage, workgroup and database
from its outputs, a source's queues by their names.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apilake.config import SourcesFile, load_sources
from apilake.drift import run_drift
from apilake.exceptions import ApilakeError
from apilake.ledger import LEDGER_PREFIX, Ledger, RunManifest
from apilake.marks import MarkStore, mark_reports
from apilake.messages import WorkItem
from apilake_cli.athena import DOLLARS_PER_TB, MAX_ROWS, AthenaQuery, QueryTimedOutError
from apilake_cli.exits import Exit
from apilake_cli.lakefolder import local_lake
from apilake_cli.output import format_table, print_json, print_status, status_document
from apilake_cli.redrive import move_back, peek
from apilake_cli.stack import ATHENA_WORKGROUP, GLUE_DATABASE, Stack, new_session

# The sources file of a checkout, from its root folder.
SOURCES_FILE = Path("layers/common/sources.yaml")
# The runs an unknown --run's error names, the latest first.
LATEST_RUNS_SHOWN = 5


def pinned_sources(path: Path | None) -> SourcesFile | None:
    """The sources file whose ``columns`` schema drift is judged against: ``path``, else the checkout's when
    there is one (an operator install away from a checkout shows no drift)."""
    if path is not None:
        return load_sources(path)
    return load_sources(SOURCES_FILE) if SOURCES_FILE.is_file() else None


def ledger_of(args: argparse.Namespace) -> tuple[Ledger, Stack | None]:
    """The ledger of ``--stack-name``'s bucket, of ``--bucket``, or of the lake folder (``--lake``, else
    ``<home>/lake``)."""
    if args.stack_name and args.bucket:
        raise ApilakeError("give --stack-name or --bucket, not both")
    if getattr(args, "lake", None) and (args.stack_name or args.bucket):
        raise ApilakeError("give --lake (a lake folder) or --stack-name / --bucket (a deployed lake), not both")
    if args.stack_name:
        stack = Stack.from_args(args)
        return stack.ledger(), stack
    if args.bucket:
        return Ledger(new_session(args.profile, args.region).client("s3"), args.bucket), None
    lake = local_lake(args)
    if not (lake / "ledger").exists():
        raise FileNotFoundError(
            f"no ledger in {lake}: run `apilake demo` or `apilake run --local` first, "
            "or give --stack-name (or --bucket) for a deployed lake"
        )
    from apilake.folder_store import FolderClient

    return Ledger(FolderClient(lake), "local"), None


def manifests_listed(ledger: Ledger) -> dict[str, datetime]:
    """Each run's id and when its manifest was written, from a listing of the ledger's runs (no manifest read)."""
    prefix, suffix = f"{LEDGER_PREFIX}/runs/run=", "/manifest.json"
    found: dict[str, datetime] = {}
    for page in ledger.client.get_paginator("list_objects_v2").paginate(Bucket=ledger.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(suffix):
                found[obj["Key"][len(prefix) : -len(suffix)]] = obj["LastModified"]
    return found


def choose_run(ledger: Ledger, run_id: str | None) -> RunManifest:
    """The run ``run_id``'s manifest, or (None) the latest's: the manifest written last, as the listing says.
    Only that manifest is read (S3 times are to the second: manifests written in the same second are all read,
    and the one created last wins)."""
    if run_id is not None and (manifest := ledger.read_manifest(run_id)) is not None:
        return manifest
    listed = manifests_listed(ledger)
    if not listed:
        raise FileNotFoundError(f"no run has been planned yet in {ledger.bucket}")
    latest = sorted(listed, key=lambda run: (listed[run], run), reverse=True)
    if run_id is not None:
        shown = ", ".join(latest[:LATEST_RUNS_SHOWN])
        if len(latest) > LATEST_RUNS_SHOWN:
            shown += f" (of {len(latest)})"
        raise FileNotFoundError(f"no run {run_id!r} in {ledger.bucket}; the latest runs: {shown}")
    newest = [run for run in latest if listed[run] == listed[latest[0]]]
    manifests = [manifest for run in newest if (manifest := ledger.read_manifest(run)) is not None]
    if not manifests:  # deleted since the listing
        raise FileNotFoundError(f"the latest run {latest[0]!r} of {ledger.bucket} has no manifest any more")
    return max(manifests, key=lambda manifest: manifest.created_at)


def cmd_status(args: argparse.Namespace) -> int:
    ledger, stack = ledger_of(args)
    manifest = choose_run(ledger, args.run)
    sources = pinned_sources(args.sources)
    status = ledger.status(manifest, details=sources is not None)
    drift = run_drift(status, sources) if sources is not None else None
    dlq = stack.dlq_depths(list(manifest.sources)) if stack else None
    if args.json:
        print_json(status_document(status, dlq, drift))
    else:
        home = None if args.stack_name or args.bucket else args.home
        marks = mark_reports(MarkStore(ledger.client, ledger.bucket), manifest)
        print_status(status, home, marks, dlq, drift)
    return Exit.DONE if status.complete else Exit.NOT_DONE


def _timestamp(milliseconds: str | None) -> str | None:
    if milliseconds is None:
        return None
    when = datetime.fromtimestamp(int(milliseconds) / 1000, tz=UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def describe_dlq_message(ledger: Ledger, message: dict[str, Any]) -> dict[str, Any]:
    """A DLQ message: its work item, receives before this look, first receive and the page's last failure."""
    attributes = message.get("Attributes", {})
    described: dict[str, Any] = {
        "message_id": message["MessageId"],
        "run_id": None,
        "shard": None,
        "page": None,
        "receive_count": int(attributes.get("ApproximateReceiveCount", 1)) - 1,  # less this look's receive
        "sent_at": _timestamp(attributes.get("SentTimestamp")),
        "first_received_at": _timestamp(attributes.get("ApproximateFirstReceiveTimestamp")),
        "last_failure": None,
        "body": None,
    }
    try:
        item = WorkItem.model_validate_json(message["Body"])
    except ValidationError:
        described["body"] = message["Body"]  # not a work item: shown as it is
        return described
    described.update(run_id=item.run_id, shard=item.shard, page=item.page, last_failure=ledger.read_failure(item))
    return described


def cmd_dlq_peek(args: argparse.Namespace) -> int:
    stack = Stack.from_args(args)
    dlq_url = stack.queue_url(args.source, dead_letter=True)
    ledger = stack.ledger()
    depth = stack.depth(dlq_url)  # before the look, whose receives put the messages in flight for a moment
    messages = [describe_dlq_message(ledger, m) for m in peek(stack.sqs, dlq_url)]
    messages.sort(key=lambda m: (m["run_id"] or "", m["shard"] or "", m["page"] or 0))
    unseen = depth.total - len(messages)
    if args.json:
        print_json({"source": args.source, "dlq_url": dlq_url, "depth": depth.as_dict(), "messages": messages})
    else:
        name = dlq_url.rsplit("/", 1)[-1]
        if unseen > 0:
            print(
                f"{args.source}: {len(messages)} of about {depth.total} message(s) in {name} shown (left in place); "
                f"the other {unseen} are in flight elsewhere (another peek, a redrive) or delayed: look again in a "
                "minute"
            )
        else:
            print(f"{args.source}: {len(messages)} message(s) in {name} (left in place)")
        for m in messages:
            print_dlq_message(m)
        if messages or unseen > 0:
            print(f"fix the cause, then: apilake redrive --stack-name {stack.name} --source {args.source}")
    return Exit.NOT_DONE if messages or unseen > 0 else Exit.DONE


def print_dlq_message(m: dict[str, Any]) -> None:
    if m["run_id"] is None:
        print(f"  message {m['message_id']}: not a work item: {m['body']}")
        return
    print(
        f"  run {m['run_id']} shard {m['shard']} page {m['page']}: received {m['receive_count']} time(s), "
        f"first {m['first_received_at']}"
    )
    failure = m["last_failure"]
    if failure is None:
        print("    no failure noted in the ledger")
    else:
        print(
            f"    last failure {failure.get('at')} (attempt {failure.get('attempt')}): "
            f"{failure.get('error')}: {failure.get('reason')}"
        )


def cmd_redrive(args: argparse.Namespace) -> int:
    stack = Stack.from_args(args)
    dlq_url, queue_url = stack.queue_url(args.source, dead_letter=True), stack.queue_url(args.source)
    result = move_back(
        stack.sqs,
        dlq_url,
        queue_url,
        per_second=args.per_second,
        wait=not args.no_wait,
        timeout=args.timeout,
        interval=args.interval,
    )
    if args.json:
        print_json({"source": args.source, "dlq_url": dlq_url, "queue_url": queue_url, **result.as_dict()})
    else:
        names = f"{dlq_url.rsplit('/', 1)[-1]} -> {queue_url.rsplit('/', 1)[-1]}"
        if result.method == "copy":
            print(f"{args.source}: moved {result.moved} message(s) {names} (copied: this endpoint has no move task)")
        elif args.no_wait:
            print(f"{args.source}: message move task started {names}: {result.task_handle}")
        else:
            print(
                f"{args.source}: message move task {result.status}{' (still running: timed out)' * result.timed_out}"
                f" {names}: moved {result.moved} message(s)"
                + (f" of {result.to_move}" if result.to_move is not None else "")
                + (f"; failure: {result.failure_reason}" if result.failure_reason else "")
            )
    if result.timed_out:
        return Exit.TIMED_OUT
    return Exit.DONE if result.status in ("COMPLETED", "RUNNING") else Exit.NOT_DONE


def cmd_query_athena(args: argparse.Namespace) -> int:
    stack = Stack.from_args(args)
    query = AthenaQuery(stack.client("athena"), stack.output(ATHENA_WORKGROUP), stack.output(GLUE_DATABASE))
    try:
        result = query.run(args.sql, timeout=args.timeout, interval=args.interval, max_rows=args.max_rows or MAX_ROWS)
    except QueryTimedOutError as exc:
        print(f"apilake: {exc}", file=sys.stderr)
        if args.json:
            print_json({"query_execution_id": exc.execution_id, "error": str(exc), "timed_out": True})
        return Exit.TIMED_OUT
    if args.json:
        print_json(result.as_dict())
    else:
        print(format_table(result.columns, result.rows))
        if result.truncated:
            whole = result.output_location or "the workgroup's output location"
            print(
                f"the first {len(result.rows):,} rows only: the result has more (--max-rows reads more; all of it "
                f"is in {whole})"
            )
        print(
            f"scanned {result.bytes_scanned:,} bytes (about ${result.cost_dollars:.4f} at ${DOLLARS_PER_TB:.0f}/TB); "
            f"query {result.execution_id} in workgroup {query.workgroup}"
        )
    return Exit.DONE


def cmd_sources_validate(args: argparse.Namespace) -> int:
    sources = load_sources(args.file)
    for source in sources.sources:
        print(
            f"{source.name}: {source.pagination.type} pagination, {source.sharding.type} sharding, "
            f"auth {source.auth.type}, {budget_text(sources, source.name)}"
        )
    for group in sources.unused_budget_groups:
        print(f"{args.file}: warning: budget group {group!r} is declared but no source uses it", file=sys.stderr)
    print(f"{args.file}: {len(sources.sources)} sources, valid")
    return Exit.DONE


def budget_text(sources: SourcesFile, name: str) -> str:
    """A source's budget for people: its own rate over its workers, or its share of its group's."""
    budget = sources.get(name).budget
    if budget.group is None:
        return f"{budget.requests_per_second or 'unlimited'} req/s over {budget.max_concurrency} workers"
    group_rps = sources.budget_groups[budget.group].requests_per_second
    return (
        f"budget group {budget.group} ({group_rps:g} req/s shared), {budget.per_worker_rps:.3g} req/s "
        f"each of {budget.max_concurrency} workers"
    )
