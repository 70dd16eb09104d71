"""`apilake`: the command line for people.

Operator commands, for a deployed stack or the local lake folder (`pip install .` is enough):
status, redrive, sources validate. Dev commands, on this machine (`pip install -e '.[dev]'` from a
checkout): demo, run --local, query, soak, template. Never shipped in the Lambda layer.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from apilake.exceptions import ApilakeError
from apilake_cli import develop, operate

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
    except (BotoCoreError, ClientError) as exc:
        print(f"apilake: AWS: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apilake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('apilake')}")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state: lake folder, logs, DLQ dumps")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add_operator_commands(commands)
    add_dev_commands(commands)
    return parser


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--region", help="AWS region (default: from the environment or profile)")
    aws.add_argument("--profile", help="AWS profile (default: from the environment)")

    status = commands.add_parser(
        "status",
        parents=[aws],
        help="did the run finish? pages expected vs landed, what is missing; exit 0 = complete",
    )
    status.add_argument("--run", help="run id (default: the latest)")
    deployed = status.add_mutually_exclusive_group()
    deployed.add_argument("--bucket", help="read the ledger of a deployed lake bucket instead of the local folder")
    deployed.add_argument("--stack-name", help="or of the lake bucket of this deployed stack")
    status.set_defaults(func=operate.cmd_status)

    redrive = commands.add_parser(
        "redrive", parents=[aws], help="move a source's dead-letter queue back to its queue (deployed stack)"
    )
    redrive.add_argument("--stack-name", help="the deployed stack that has the source's queues")
    redrive.add_argument("--source", help="the source whose DLQ to move back (with --stack-name)")
    redrive.add_argument("--queue-url", help="or give the URLs: the source's queue")
    redrive.add_argument("--dlq-url", help="and its dead-letter queue")
    redrive.set_defaults(func=operate.cmd_redrive)

    sources = commands.add_parser("sources", help="the sources file")
    actions = sources.add_subparsers(required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check a sources file; errors name the source and the field")
    validate.add_argument(
        "file", type=Path, nargs="?", default=operate.SOURCES_FILE, help="default: %(default)s (from a checkout)"
    )
    validate.set_defaults(func=operate.cmd_sources_validate)


def add_dev_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="the scheduled planner -> queues -> workers flow end to end on this machine, against fake vendors",
    )
    demo.add_argument("--scale", type=float, default=1.0, help="fraction of the demo's data set (default 1)")
    demo.set_defaults(func=develop.cmd_demo)

    run = commands.add_parser("run", help="the same flow on this machine against the configured (real) vendors")
    run.add_argument("--local", action="store_true", required=True, help="on this machine (moto for AWS)")
    run.add_argument("--sources", type=Path, help="sources file (default: the checkout's layers/common/sources.yaml)")
    run.add_argument("--event", type=Path, help="planner event, JSON (default: the checkout's events/planner.json)")
    run.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret the sources use")
    run.add_argument("--visibility-timeout", type=int, help="seconds; shortens the template's to see retries sooner")
    run.set_defaults(func=develop.cmd_run)

    query = commands.add_parser("query", help="SQL over the local lake with DuckDB (views: raw, one per source)")
    query.add_argument("sql")
    query.set_defaults(func=develop.cmd_query)

    soak = commands.add_parser("soak", help="the local flow under every fault kind, then a verdict; exit 1 on loss")
    soak.add_argument("--pages", type=int, default=2000, help="about this many pages over the four sources")
    soak.add_argument("--seed", type=int, default=7, help="seed of the fault draws")
    soak.add_argument("--visibility-timeout", type=int, default=6, help="seconds (redelivery speed)")
    soak.set_defaults(func=develop.cmd_soak)

    template = commands.add_parser("template", help="regenerate template.yaml from the sources file")
    template.add_argument("--check", action="store_true", help="only check that it is up to date")
    template.set_defaults(func=develop.cmd_template)


if __name__ == "__main__":
    raise SystemExit(main())
