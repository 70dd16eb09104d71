"""`apilake run` and `apilake backfill` on a deployed stack: the planner invoked with a manual event (as
``apilake.planner.ManualRun`` reads it), its plan printed, and with ``--follow`` the run watched in the
ledger and the queues until it is complete, settles incomplete, or the timeout passes.

The event always carries the run's id (``--run-id``, else one the planner's way, chosen here): when the
planner fails after writing the run's manifest (some sources not planned), the command still knows the run
and reads what was planned from the ledger."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from botocore.config import Config
from pydantic import ValidationError

from apilake.exceptions import ApilakeError, describe_validation_error
from apilake.ledger import Ledger, RunManifest, RunStatus
from apilake.planner import SCHEDULED_RUN_PREFIX, ManualRun, parse_planner_event
from apilake.report import report_keys
from apilake_cli.exits import Exit
from apilake_cli.output import format_table, print_json, print_status, source_pages, status_document
from apilake_cli.stack import PLANNER_FUNCTION, QueueDepth, Stack

# The planner's timeout is 300 s: a synchronous invoke waits that long for its answer, and is never
# retried (a second invoke would plan a second run).
PLANNER_READ_TIMEOUT = 360
LAMBDA_CONFIG = Config(read_timeout=PLANNER_READ_TIMEOUT, connect_timeout=10, retries={"total_max_attempts": 1})
# A run whose queues (and in-flight messages) stay empty this many polls in a row while it is incomplete
# has settled: nothing more will land without a redrive or another run.
SETTLED_POLLS = 3
# The manual event's fields and the options that set them (errors name the option).
OPTION_OF = {
    "sources": "--sources",
    "shard_from": "--from",
    "shard_to": "--to",
    "ingestion_date": "--ingestion-date",
    "run_id": "--run-id",
    "since": "--since",
    "until": "--until",
}


def iso_date(text: str) -> date:
    """argparse's type of a date option: YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def source_list(text: str | None) -> list[str] | None:
    """``--sources a,b`` as a list of names (None: not given)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ApilakeError(f"--sources: expected source names separated by commas, got {text!r}")
    return names


def manual_event(**fields: Any) -> dict[str, Any]:
    """The planner's manual event from the options given (None: not given), checked as the planner will,
    with the run's id (the planner's default kind, ``manual-<time>-<random>``, when ``run_id`` is not given)."""
    run_id = fields.get("run_id")
    if run_id is not None and run_id.startswith(SCHEDULED_RUN_PREFIX):
        raise ApilakeError(
            f"--run-id {run_id}: ids starting with {SCHEDULED_RUN_PREFIX!r} are the scheduled runs' (a manual run "
            "must not overwrite one's manifest); choose another id, or leave --run-id out for manual-<time>-<random>"
        )
    event = {name: value.isoformat() if isinstance(value, date) else value for name, value in fields.items()}
    event = {name: value for name, value in event.items() if value is not None}
    try:
        ManualRun.model_validate(event)
    except ValidationError as exc:
        options = " ".join(f"{OPTION_OF.get(name, name)} {value}" for name, value in event.items())
        message = describe_validation_error("planner event", exc, whole="(event)")
        raise ApilakeError(f"{message}\n  from the options: {options}") from exc
    if run_id is None:
        event["run_id"] = parse_planner_event(dict(event)).run_id
    return event


class PlannerFailedError(ApilakeError):
    """The planner's invocation ended in its own error (Lambda's ``FunctionError``)."""


def invoke_planner(lambda_client: Any, function: str, event: dict[str, Any]) -> dict[str, Any]:
    """The planner's answer to ``event`` (its plan summary); its own error as a :class:`PlannerFailedError`."""
    response = lambda_client.invoke(
        FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        detail = payload if isinstance(payload, dict) else {}
        raise PlannerFailedError(
            f"the planner ({function}) failed: {detail.get('errorType', response['FunctionError'])}: "
            f"{detail.get('errorMessage', payload)}"
        )
    if not isinstance(payload, dict) or "run_id" not in payload:
        raise ApilakeError(f"the planner ({function}) answered without a run id: {payload!r}")
    return payload


@dataclass(frozen=True)
class Poll:
    """One look at a run: the ledger's status, its sources' queues and DLQs."""

    elapsed: float
    status: RunStatus
    queues: dict[str, QueueDepth]
    dlqs: dict[str, int]

    def describe(self) -> list[str]:
        """A line per source: pages landed / expected, its queue, its DLQ."""
        out = []
        for source in self.status.sources:
            landed, expected = source_pages(source)
            queue = self.queues[source.source]
            out.append(
                f"{source.source}: {landed}/{'?' if expected is None else expected} pages"
                f"{'' if source.complete else ' ...'}  queue {queue.visible} waiting, {queue.in_flight} in flight, "
                f"{queue.delayed} delayed  DLQ (all runs) {self.dlqs[source.source]}"
            )
        return out


Outcome = Literal["complete", "settled", "timed_out"]


@dataclass
class Follower:
    """Polls a run's ledger and queues until it is complete, settles incomplete, or ``timeout`` seconds pass."""

    stack: Stack
    ledger: Ledger
    manifest: RunManifest
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def follow(self, timeout: float, interval: float, on_poll: Callable[[Poll], None]) -> tuple[Outcome, Poll]:
        sources = list(self.manifest.sources)
        urls = {source: self.stack.queue_url(source) for source in sources}
        dlq_urls = {source: self.stack.queue_url(source, dead_letter=True) for source in sources}
        start = self.clock()
        settled = 0
        while True:
            poll = Poll(
                elapsed=self.clock() - start,
                status=self.ledger.status(self.manifest),
                queues={source: self.stack.depth(url) for source, url in urls.items()},
                dlqs={source: self.stack.depth(url).total for source, url in dlq_urls.items()},
            )
            on_poll(poll)
            if poll.status.complete:
                return "complete", poll
            settled = settled + 1 if all(depth.total == 0 for depth in poll.queues.values()) else 0
            if settled >= SETTLED_POLLS:
                return "settled", poll
            if poll.elapsed >= timeout:
                return "timed_out", poll
            self.sleep(interval)


def cmd_run(args: argparse.Namespace) -> int:
    event = manual_event(
        sources=source_list(args.sources),
        ingestion_date=args.ingestion_date,
        run_id=args.run_id,
        since=args.since,
        until=args.until,
    )
    return start_run(args, event)


def cmd_backfill(args: argparse.Namespace) -> int:
    event = manual_event(
        sources=source_list(args.sources),
        shard_from=getattr(args, "from"),
        shard_to=args.to,
        ingestion_date=args.ingestion_date,
        run_id=args.run_id,
    )
    return start_run(args, event)


def start_run(args: argparse.Namespace, event: dict[str, Any]) -> int:
    """Invoke the planner, print its plan, and follow the run if asked."""
    stack = Stack.from_args(args)
    function = stack.output(PLANNER_FUNCTION)
    ledger = stack.ledger()
    try:
        planned = invoke_planner(stack.client("lambda", LAMBDA_CONFIG), function, event)
    except PlannerFailedError as exc:
        return planner_failed(args, stack, ledger, event, exc)
    document: dict[str, Any] = {
        "run_id": planned["run_id"],
        "ingestion_date": planned.get("ingestion_date"),
        "event": event,
        "messages": planned.get("messages", {}),
        "errors": planned.get("errors", {}),
        "follow": None,
        "report": None,
        "error": None,
    }
    manifest = ledger.read_manifest(planned["run_id"]) if document["messages"] else None
    if manifest is not None:
        document["report"] = report_document(stack, manifest.run_id)
    if not args.json:
        print_plan(document, stack.name)
    code = Exit.DONE
    if args.follow and manifest is not None:
        out = sys.stderr if args.json else sys.stdout
        shown: list[str] = []

        def show(poll: Poll) -> None:
            """The sources' lines when something changed, after the time since the plan."""
            lines = poll.describe()
            if lines != shown:
                minutes, seconds = divmod(int(poll.elapsed), 60)
                print("\n".join(f"{minutes:3d}:{seconds:02d}  {line}" for line in lines), file=out, flush=True)
            shown[:] = lines

        outcome, last = Follower(stack, ledger, manifest).follow(args.timeout, args.interval, show)
        code = {"complete": Exit.DONE, "settled": Exit.NOT_DONE, "timed_out": Exit.TIMED_OUT}[outcome]
        document["follow"] = {
            "outcome": outcome,
            "elapsed_seconds": round(last.elapsed, 1),
            "status": status_document(last.status, last.dlqs),
        }
        if not args.json:
            print_outcome(outcome, last, args)
    if args.json:
        print_json(document)
    elif document["report"] is not None:
        print_report_line(document["report"])
    return code


def report_document(stack: Stack, run_id: str) -> dict[str, str]:
    """Where the run's report will be: the command that shows it, and its keys in the lake bucket."""
    json_key, html_key = report_keys(run_id)
    return {
        "command": f"apilake report --run {run_id} --stack-name {stack.name}",
        "json": f"s3://{stack.bucket}/{json_key}",
        "html": f"s3://{stack.bucket}/{html_key}",
    }


def print_report_line(report: dict[str, str]) -> None:
    print(f"its report: {report['command']}")
    print(f"  (the completeness check writes it to {report['html']}; until then the command builds it from the ledger)")


def planner_failed(
    args: argparse.Namespace, stack: Stack, ledger: Ledger, event: dict[str, Any], error: PlannerFailedError
) -> int:
    """The planner's own error, with the run it was planning: when it wrote the run's manifest (some sources
    planned, some not: PlanningError), what the manifest says was not planned and why."""
    run_id: str = event["run_id"]
    manifest = ledger.read_manifest(run_id)
    errors: dict[str, str] = {}
    if manifest is not None:
        for source, plan in manifest.sources.items():
            reasons = [f"shard {shard.shard}: {shard.error}" for shard in plan.shards if shard.error]
            if reasons:
                errors[source] = "; ".join(reasons)
    report = None if manifest is None else report_document(stack, run_id)
    document = {
        "run_id": run_id,
        "ingestion_date": None if manifest is None else manifest.ingestion_date.isoformat(),
        "event": event,
        "messages": None,  # the planner's count is in its answer, which an error replaces
        "errors": errors,
        "follow": None,
        "report": report,
        "error": str(error),
    }
    print(f"apilake: {error}", file=sys.stderr)
    if args.json:
        print_json(document)
    elif manifest is not None:
        planned = [source for source in manifest.sources if source not in errors]
        print(
            f"run {run_id} PARTLY planned (ingestion date {manifest.ingestion_date}): "
            f"planned {', '.join(planned) or 'no source'}"
        )
        for source, reason in errors.items():
            print(f"  {source}: NOT planned: {reason}")
        print(f"follow it: apilake status --run {run_id} --stack-name {stack.name}")
        if report is not None:
            print_report_line(report)
    return Exit.ERROR


def print_plan(document: dict[str, Any], stack: str) -> None:
    run_id = document["run_id"]
    if not document["messages"]:
        print(f"run {run_id}: nothing to plan (no source selected)")
        return
    print(f"run {run_id} planned (ingestion date {document['ingestion_date']}): messages sent per source")
    print(format_table(["source", "messages"], sorted(document["messages"].items())))
    for source, error in document["errors"].items():
        print(f"  {source}: NOT planned: {error}")
    print(f"follow it: apilake status --run {run_id} --stack-name {stack}")


def print_outcome(outcome: Outcome, last: Poll, args: argparse.Namespace) -> None:
    run_id = last.status.run_id
    print()
    if outcome == "complete":
        print(f"run {run_id}: complete after {last.elapsed:.0f}s")
    elif outcome == "settled":
        print(
            f"run {run_id}: settled INCOMPLETE: its queues are empty and it is not complete "
            f"(DLQs, all runs: {sum(last.dlqs.values())} message(s)); see apilake dlq peek --stack-name "
            f"{args.stack_name} --source <source>"
        )
    else:
        print(f"run {run_id}: not complete after {args.timeout:.0f}s (still running; apilake status follows it)")
    print_status(last.status, None, dlq_depths=last.dlqs)
