"""The operator commands: did a run finish (`status`), a source's DLQ back to its queue (`redrive`), and
`sources validate`. They need the runtime package and boto3 only (`pip install .`).

A deployed stack is found by its name: the lake bucket from the stack's output ``LakeBucketName``, a
source's queues from the stack's resources (logical ids as in template.yaml, see apilake.names).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from apilake.config import load_sources
from apilake.exceptions import ApilakeError
from apilake.ledger import Ledger, RunManifest
from apilake.marks import MarkStore, mark_reports
from apilake.names import logical_id
from apilake_cli.lakefolder import FolderStore
from apilake_cli.output import print_status
from apilake_cli.redrive import redrive

# The sources file of a checkout, from its root folder.
SOURCES_FILE = Path("layers/common/sources.yaml")
LAKE_BUCKET_OUTPUT = "LakeBucketName"


def session(args: argparse.Namespace) -> boto3.Session:
    """The AWS session of ``--profile`` and ``--region`` (boto3's defaults when not given)."""
    return boto3.Session(profile_name=args.profile, region_name=args.region)


def stack_output(cloudformation: Any, stack: str, key: str) -> str:
    """The value of one of the stack's outputs."""
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if key not in outputs:
        raise ApilakeError(f"stack {stack} has no output {key}: is it an apilake stack?")
    value: str = outputs[key]
    return value


def source_queue_url(cloudformation: Any, stack: str, source: str, resource: str) -> str:
    """The URL of the source's queue (``resource`` "Queue" or "DeadLetterQueue") in the stack: an SQS
    queue's physical id is its URL."""
    logical = logical_id(source, resource)
    try:
        detail = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=logical)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ValidationError":
            raise
        reason = exc.response["Error"].get("Message", "")
        raise ApilakeError(f"stack {stack} has no source {source!r} (no resource {logical}: {reason})") from exc
    url: str = detail["StackResourceDetail"]["PhysicalResourceId"]
    return url


def cmd_status(args: argparse.Namespace) -> int:
    home: Path | None = None
    if args.bucket or args.stack_name:
        aws = session(args)
        bucket = args.bucket or stack_output(aws.client("cloudformation"), args.stack_name, LAKE_BUCKET_OUTPUT)
        ledger = Ledger(aws.client("s3"), bucket)
    else:
        home = args.home
        lake = args.home / "lake"
        if not (lake / "ledger").exists():
            raise FileNotFoundError(
                f"no ledger in {lake}: run `apilake demo` or `apilake run --local` first, "
                "or give --bucket or --stack-name for a deployed lake"
            )
        ledger = Ledger(FolderStore(lake), "local")
    manifests = [m for run in ledger.run_ids() if (m := ledger.read_manifest(run)) is not None]
    if not manifests:
        raise FileNotFoundError(f"no run has been planned yet in {ledger.bucket}")
    manifest = _choose(manifests, args.run)
    status = ledger.status(manifest)
    print_status(status, home, mark_reports(MarkStore(ledger.client, ledger.bucket), manifest))
    return 0 if status.complete else 1


def _choose(manifests: list[RunManifest], run_id: str | None) -> RunManifest:
    if run_id is None:
        return max(manifests, key=lambda m: m.created_at)
    for manifest in manifests:
        if manifest.run_id == run_id:
            return manifest
    raise FileNotFoundError(f"no run {run_id!r}; runs: {', '.join(m.run_id for m in manifests)}")


def cmd_redrive(args: argparse.Namespace) -> int:
    aws = session(args)
    if args.stack_name and (args.queue_url or args.dlq_url):
        raise ApilakeError("give --stack-name and --source, or --queue-url and --dlq-url, not both")
    if args.stack_name:
        if not args.source:
            raise ApilakeError("--stack-name needs --source: whose DLQ to move back")
        cloudformation = aws.client("cloudformation")
        queue_url = source_queue_url(cloudformation, args.stack_name, args.source, "Queue")
        dlq_url = source_queue_url(cloudformation, args.stack_name, args.source, "DeadLetterQueue")
    elif args.queue_url and args.dlq_url:
        queue_url, dlq_url = args.queue_url, args.dlq_url
    else:
        raise ApilakeError("give --stack-name and --source, or both --queue-url and --dlq-url")
    moved = redrive(aws.client("sqs"), dlq_url, queue_url)
    if args.source:
        print(f"{args.source}: moved {moved} message(s) from its DLQ back to its queue")
    else:
        print(f"moved {moved} message(s) from {dlq_url} back to {queue_url}")
    return 0


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
