"""The operator commands: did a run finish (`status`), what is in a DLQ (`dlq peek`) and back to its
queue (`redrive`), SQL on Athena (`query --athena`), where a run's report is (`report`), and
`sources validate`; `run` and `backfill` are in apilake_cli.runs. They need the runtime package and
boto3 only (`pip install .`).

A deployed stack is found by its name (apilake_cli.stack): the bucket, stage, workgroup and database
from its outputs, a source's queues by their names.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from apilake.config import load_sources
from apilake.exceptions import ApilakeError
from apilake.lake import is_not_found
from apilake.ledger import Ledger, RunManifest, shard_prefix
from apilake.marks import MarkStore, mark_reports
from apilake.messages import WorkItem
from apilake.report import report_keys
from apilake_cli.athena import DOLLARS_PER_TB, AthenaQuery, QueryTimedOutError
from apilake_cli.exits import Exit
from apilake_cli.lakefolder import FolderStore
from apilake_cli.output import format_table, print_json, print_status, status_document
from apilake_cli.redrive import move_back, peek
from apilake_cli.stack import ATHENA_WORKGROUP, GLUE_DATABASE, Stack, new_session

# The sources file of a checkout, from its root folder.
SOURCES_FILE = Path("layers/common/sources.yaml")


def _ledger(args: argparse.Namespace) -> tuple[Ledger, Stack | None]:
    """The ledger of ``--stack-name``'s bucket, of ``--bucket``, or of the local lake folder."""
    if args.stack_name and args.bucket:
        raise ApilakeError("give --stack-name or --bucket, not both")
    if args.stack_name:
        stack = Stack.from_args(args)
        return stack.ledger(), stack
    if args.bucket:
        return Ledger(new_session(args.profile, args.region).client("s3"), args.bucket), None
    lake = args.home / "lake"
    if not (lake / "ledger").exists():
        raise FileNotFoundError(
            f"no ledger in {lake}: run `apilake demo` or `apilake run --local` first, "
            "or give --stack-name (or --bucket) for a deployed lake"
        )
    return Ledger(FolderStore(lake), "local"), None


def choose_run(ledger: Ledger, run_id: str | None) -> RunManifest:
    """The run ``run_id`` (default: the latest planned) from the ledger's manifests."""
    manifests = [m for run in ledger.run_ids() if (m := ledger.read_manifest(run)) is not None]
    if not manifests:
        raise FileNotFoundError(f"no run has been planned yet in {ledger.bucket}")
    if run_id is None:
        return max(manifests, key=lambda m: m.created_at)
    for manifest in manifests:
        if manifest.run_id == run_id:
            return manifest
    raise FileNotFoundError(f"no run {run_id!r} in {ledger.bucket}; runs: {', '.join(m.run_id for m in manifests)}")


def cmd_status(args: argparse.Namespace) -> int:
    ledger, stack = _ledger(args)
    manifest = choose_run(ledger, args.run)
    status = ledger.status(manifest)
    dlq = stack.dlq_depths(list(manifest.sources)) if stack else None
    if args.json:
        print_json(status_document(status, dlq))
    else:
        home = None if args.stack_name or args.bucket else args.home
        print_status(status, home, mark_reports(MarkStore(ledger.client, ledger.bucket), manifest), dlq)
    return Exit.DONE if status.complete else Exit.NOT_DONE


def _timestamp(milliseconds: str | None) -> str | None:
    if milliseconds is None:
        return None
    when = datetime.fromtimestamp(int(milliseconds) / 1000, tz=UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def last_failure(ledger: Ledger, item: WorkItem) -> dict[str, Any] | None:
    """The page's last failure as the worker noted it (``failed=<page>.json``, see apilake.ledger), or None."""
    key = f"{shard_prefix(item.source, item.run_id, item.shard)}failed={item.page:05d}.json"
    try:
        body = ledger.client.get_object(Bucket=ledger.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    document: dict[str, Any] = json.loads(body)
    return document


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
    described.update(run_id=item.run_id, shard=item.shard, page=item.page, last_failure=last_failure(ledger, item))
    return described


def cmd_dlq_peek(args: argparse.Namespace) -> int:
    stack = Stack.from_args(args)
    dlq_url = stack.queue_url(args.source, dead_letter=True)
    ledger = stack.ledger()
    messages = [describe_dlq_message(ledger, m) for m in peek(stack.sqs, dlq_url)]
    messages.sort(key=lambda m: (m["run_id"] or "", m["shard"] or "", m["page"] or 0))
    if args.json:
        print_json({"source": args.source, "dlq_url": dlq_url, "messages": messages})
    else:
        print(f"{args.source}: {len(messages)} message(s) in {dlq_url.rsplit('/', 1)[-1]} (left in place)")
        for m in messages:
            if m["run_id"] is None:
                print(f"  message {m['message_id']}: not a work item: {m['body']}")
                continue
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
        if messages:
            print(f"fix the cause, then: apilake redrive --stack-name {stack.name} --source {args.source}")
    return Exit.NOT_DONE if messages else Exit.DONE


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
        result = query.run(args.sql, timeout=args.timeout, interval=args.interval)
    except QueryTimedOutError as exc:
        print(f"apilake: {exc}", file=sys.stderr)
        return Exit.TIMED_OUT
    if args.json:
        print_json(result.as_dict())
    else:
        print(format_table(result.columns, result.rows))
        print(
            f"scanned {result.bytes_scanned:,} bytes (about ${result.cost_dollars:.4f} at ${DOLLARS_PER_TB:.0f}/TB); "
            f"query {result.execution_id} in workgroup {query.workgroup}"
        )
    return Exit.DONE


def cmd_report(args: argparse.Namespace) -> int:
    ledger, stack = _ledger(args)
    run_id = choose_run(ledger, args.run).run_id
    keys = report_keys(run_id)
    if stack is None and not args.bucket:
        paths = [args.home / "lake" / key for key in keys]
        missing = [str(path) for path in paths if not path.is_file()]
        where = "local"
    else:
        paths = [args.home / "reports" / run_id / key.rsplit("/", 1)[-1] for key in keys]
        missing = [
            f"s3://{ledger.bucket}/{key}"
            for key, path in zip(keys, paths, strict=True)
            if not _fetch(ledger, key, path)
        ]
        where = "bucket"
    if missing:
        print(
            f"apilake: no report of run {run_id} yet ({', '.join(missing)}): the completeness check writes it "
            "when the run is due, `apilake demo` and `apilake run --local` at the end of the run",
            file=sys.stderr,
        )
        return Exit.NOT_DONE
    json_path, html_path = paths
    if args.json:
        print_json({"run_id": run_id, "from": where, "json": str(json_path), "html": str(html_path)})
    else:
        print(f"run {run_id}: report {html_path}\n  data {json_path}")
    if args.open:
        webbrowser.open(html_path.resolve().as_uri())
    return Exit.DONE


def _fetch(ledger: Ledger, key: str, path: Path) -> bool:
    """Download ``key`` of the ledger's bucket to ``path``; False when there is no such key."""
    try:
        body = ledger.client.get_object(Bucket=ledger.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return True


def cmd_sources_validate(args: argparse.Namespace) -> int:
    sources = load_sources(args.file)
    for source in sources.sources:
        print(
            f"{source.name}: {source.pagination.type} pagination, {source.sharding.type} sharding, "
            f"auth {source.auth.type}, {source.budget.requests_per_second or 'unlimited'} req/s over "
            f"{source.budget.max_concurrency} workers"
        )
    print(f"{args.file}: {len(sources.sources)} sources, valid")
    return Exit.DONE
