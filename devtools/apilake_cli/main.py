"""`apilake`: the command line for people (local demo and runs, SQL, run status, config checks).

Installed in the dev environment; never shipped in the Lambda layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import duckdb

from apilake.config import load_sources
from apilake.exceptions import ApilakeError
from apilake.ledger import Ledger, RunManifest, RunStatus
from apilake_cli.redrive import redrive
from apilake_dev import demo, query, soak
from apilake_dev.local.lakefolder import FolderStore
from apilake_dev.local.run import LocalRunResult, run_local
from apilake_dev.template import generate as template
from apilake_dev.template.generate import pascal

DEFAULT_HOME = Path(".apilake")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ApilakeError, FileNotFoundError) as exc:
        print(f"apilake: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"apilake: query failed: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apilake", description=__doc__)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state: lake folder, logs, DLQ dumps")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo_cmd = commands.add_parser("demo", help="run Option A end to end on this machine against fake vendors")
    demo_cmd.add_argument("--scale", type=float, default=1.0, help="fraction of the demo's data set (default 1)")
    demo_cmd.set_defaults(func=cmd_demo)

    run_cmd = commands.add_parser("run", help="run the flow against the configured (real) vendors")
    run_cmd.add_argument("--local", action="store_true", required=True, help="on this machine (moto for AWS)")
    run_cmd.add_argument("--sources", type=Path, default=demo.SHIPPED_SOURCES, help="sources file")
    run_cmd.add_argument("--event", type=Path, default=demo.PLANNER_EVENT, help="planner event (JSON)")
    run_cmd.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret the sources use")
    run_cmd.add_argument(
        "--visibility-timeout", type=int, help="seconds; shortens the template's to see retries sooner"
    )
    run_cmd.set_defaults(func=cmd_run)

    query_cmd = commands.add_parser("query", help="SQL over the local lake with DuckDB (views: raw, one per source)")
    query_cmd.add_argument("sql")
    query_cmd.set_defaults(func=cmd_query)

    status_cmd = commands.add_parser("status", help="did the run finish? pages expected vs landed, what is missing")
    status_cmd.add_argument("--run", help="run id (default: the latest)")
    status_cmd.add_argument("--bucket", help="read the ledger of a deployed lake bucket instead of the local folder")
    status_cmd.set_defaults(func=cmd_status)

    sources_cmd = commands.add_parser("sources", help="the sources file")
    sources_sub = sources_cmd.add_subparsers(required=True, metavar="ACTION")
    validate = sources_sub.add_parser("validate", help="validate a sources file")
    validate.add_argument("file", type=Path, nargs="?", default=demo.SHIPPED_SOURCES)
    validate.set_defaults(func=cmd_sources_validate)

    soak_cmd = commands.add_parser("soak", help="the local flow under every fault kind, then a verdict; exit 1 on loss")
    soak_cmd.add_argument("--pages", type=int, default=2000, help="about this many pages over the four sources")
    soak_cmd.add_argument("--seed", type=int, default=7, help="seed of the fault draws")
    soak_cmd.add_argument("--visibility-timeout", type=int, default=6, help="seconds (redelivery speed)")
    soak_cmd.set_defaults(func=cmd_soak)

    redrive_cmd = commands.add_parser("redrive", help="move a source's DLQ back to its queue (deployed stack)")
    redrive_cmd.add_argument("--source", required=True)
    redrive_cmd.add_argument("--stack-name", help="read the queue URLs from this stack's outputs")
    redrive_cmd.add_argument("--queue-url", help="or give them: the source's queue")
    redrive_cmd.add_argument("--dlq-url", help="and its dead-letter queue")
    redrive_cmd.set_defaults(func=cmd_redrive)

    template_cmd = commands.add_parser("template", help="regenerate template.yaml from the sources file")
    template_cmd.add_argument("--check", action="store_true", help="only check that it is up to date")
    template_cmd.set_defaults(func=cmd_template)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    home: Path = args.home
    print("apilake demo: Option A on this machine (moto for AWS, fake vendors on 127.0.0.1, DuckDB for SQL)\n")
    result, sets = demo.run_demo(home, scale=args.scale)
    print()
    print_summary(result, expected={d.name: d.total for d in sets})
    print()
    print_status(result.status, home)
    print(f"\nlake folder: {home / 'lake'}  (gzip NDJSON, keys as in S3)")
    print(
        "catalog (Glue, emulated): "
        + ", ".join(f"{c['table']} ({c['partitions']} partitions)" for c in result.catalog.values())
    )
    for title, sql in demo.EXAMPLE_QUERIES:
        print(f"\n{title}:\n  {sql}\n")
        print(query.format_table(*query.run(home / "lake", sql)))
    print(
        '\nNext: apilake query "select source, count(*) from raw group by 1"   ·   apilake status'
        f"   ·   logs in {home / 'logs'}"
    )
    return 0 if result.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    secrets = {}
    for pair in args.secret:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ApilakeError(f"--secret {pair.split('=')[0]!r}: expected NAME=VALUE")
        secrets[name] = value
    event = json.loads(args.event.read_text())
    result = run_local(args.sources, args.home, event, secrets=secrets, visibility_timeout=args.visibility_timeout)
    print()
    print_summary(result)
    print()
    print_status(result.status, args.home)
    return 0 if result.ok else 1


def cmd_query(args: argparse.Namespace) -> int:
    print(query.format_table(*query.run(args.home / "lake", args.sql)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.bucket:
        import boto3

        ledger = Ledger(boto3.client("s3"), args.bucket)
    else:
        lake = args.home / "lake"
        if not (lake / "ledger").exists():
            raise FileNotFoundError(f"no ledger in {lake}: run `apilake demo` or `apilake run --local` first")
        ledger = Ledger(FolderStore(lake), "local")
    manifests = [m for run in ledger.run_ids() if (m := ledger.read_manifest(run)) is not None]
    if not manifests:
        raise FileNotFoundError("no run has been planned yet")
    chosen = _choose(manifests, args.run)
    status = ledger.status(chosen)
    print_status(status, None if args.bucket else args.home)
    return 0 if status.complete else 1


def _choose(manifests: list[RunManifest], run_id: str | None) -> RunManifest:
    if run_id is None:
        return max(manifests, key=lambda m: m.created_at)
    for manifest in manifests:
        if manifest.run_id == run_id:
            return manifest
    raise FileNotFoundError(f"no run {run_id!r}; runs: {', '.join(m.run_id for m in manifests)}")


def cmd_sources_validate(args: argparse.Namespace) -> int:
    sources = load_sources(args.file)
    for source in sources.sources:
        print(
            f"{source.name}: {source.pagination.type} pagination, {source.sharding.type} sharding, "
            f"auth {source.auth.type}, {source.budget.requests_per_second or 'unlimited'} req/s over "
            f"{source.budget.max_concurrency} workers"
        )
    print(f"{args.file}: {len(sources.sources)} sources, valid")
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    result = soak.run_soak(args.home, pages=args.pages, seed=args.seed, visibility_timeout=args.visibility_timeout)
    print("\ninjected faults:")
    print(query.format_table(["fault", "count"], sorted(result.injected.items())))
    print(f"\n{result.pages_total} pages, {result.result.wall_seconds:.0f}s")
    for verdict in result.verdicts:
        print(verdict.line())
        for detail in verdict.details:
            print(f"  {detail}")
    complete = result.result.status is not None and result.result.status.complete
    print(f"status after redrive: complete: {'yes' if complete else 'NO'}")
    return 0 if result.ok else 1


def cmd_redrive(args: argparse.Namespace) -> int:
    import boto3

    sqs = boto3.client("sqs")
    queue_url, dlq_url = args.queue_url, args.dlq_url
    if args.stack_name:
        stacks = boto3.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        name = pascal(args.source)
        if f"{name}QueueUrl" not in outputs:
            raise ApilakeError(f"stack {args.stack_name} has no source {args.source!r} (no output {name}QueueUrl)")
        queue_url, dlq_url = outputs[f"{name}QueueUrl"], outputs[f"{name}DeadLetterQueueUrl"]
    if not queue_url or not dlq_url:
        raise ApilakeError("give --stack-name, or both --queue-url and --dlq-url")
    moved = redrive(sqs, dlq_url, queue_url)
    print(f"{args.source}: moved {moved} message(s) from its DLQ back to its queue")
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    return template.main(["--check"] if args.check else [])


def print_summary(result: LocalRunResult, expected: dict[str, int] | None = None) -> None:
    headers = ["source", "pages", "records", *(["vendor total"] if expected else []), "bytes", "retries", "429s", "DLQ"]
    rows: list[tuple[Any, ...]] = []
    for name, s in result.sources.items():
        vendor = [expected.get(name, "")] if expected else []
        rows.append((name, s.pages, s.records, *vendor, s.bytes, s.retries, s.throttled, s.dlq))
    print(
        f"run {result.run_id}: {'drained' if result.drained else 'NOT drained (time limit)'} "
        f"in {result.wall_seconds:.1f}s"
    )
    if result.planner_error:
        print(f"planner error: {result.planner_error}")
    print(query.format_table(headers, rows))


def print_status(status: RunStatus | None, home: Path | None) -> None:
    if status is None:
        print("status: no run manifest (the planner did not run)")
        return
    print(
        f"run {status.run_id} (ingestion date {status.ingestion_date}): complete: {'yes' if status.complete else 'NO'}"
    )
    for source in status.sources:
        print(f"  {source.source}: {'complete' if source.complete else 'INCOMPLETE'}")
        for shard in source.shards:
            expected = "?" if shard.expected_pages is None else shard.expected_pages
            line = f"    shard {shard.shard} ({shard.mode}): {shard.landed_pages}/{expected} pages"
            if shard.mode == "chain":
                line += ", chain ended" if shard.ended else ", chain NOT ended"
            print(line)
            if shard.note:
                print(f"      {shard.note}")
            for page in sorted(set(shard.missing) | set(shard.failures)):
                print(f"      missing page {page}: {shard.failures.get(page, 'no delivery recorded')}")
        dumped = home / "dlq" / f"{source.source}.jsonl" if home else None
        if dumped and dumped.exists():
            for line in dumped.read_text().splitlines():
                message = json.loads(line)
                print(f"      in DLQ: {message['body']}")


if __name__ == "__main__":
    raise SystemExit(main())
