"""`apilake`: the command line for people.

Operator commands, for a deployed stack (`--stack-name`, `--region`, `--profile`; `--json` for scripts)
or the local lake folder, with the runtime package and boto3 only (`pip install .`): run, backfill,
status, dlq peek, redrive, query --athena, report, sources validate. Dev commands, on this machine
(`pip install -e '.[dev]'` from a checkout): demo, run --local, query (DuckDB), soak, template.
Never shipped in the Lambda layer. Exit codes: 0 done, 1 not done, 2 bad input or AWS error, 3 timed
out (each command's --help says what they mean for it; docs/operating.md).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from apilake.exceptions import ApilakeError
from apilake_cli import curate, develop, ingest, operate, runreport, runs, sources_schema, try_source
from apilake_cli.athena import MAX_ROWS
from apilake_cli.exits import Exit, epilog
from apilake_cli.output import print_json

DEFAULT_HOME = Path(".apilake")
type Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ApilakeError, FileNotFoundError) as exc:
        return fail(args, str(exc))
    except (BotoCoreError, ClientError) as exc:
        return fail(args, f"AWS: {exc}")


def fail(args: argparse.Namespace, message: str) -> int:
    """Exit 2 with the message on stderr; with --json, also as the command's document: ``{"error": ...}``."""
    print(f"apilake: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": message})
    return Exit.ERROR


# Schema drift is judged against the sources' pinned `columns`: those of the deployed sources file.
DRIFT_SOURCES_HELP = (
    f"the sources file whose `columns` the schema drift is judged against (default: {operate.SOURCES_FILE} "
    "when run from a checkout; without one, no drift is shown)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apilake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('apilake')}")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state: lake folder, logs, reports")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add_operator_commands(commands)
    ingest.add_ingest_command(commands)
    add_dev_commands(commands)
    return parser


def stack_options(required: bool) -> argparse.ArgumentParser:
    """The options every operator command shares: the stack, its region and profile, and --json."""
    shared = argparse.ArgumentParser(add_help=False)
    where = shared.add_argument_group("deployed stack")
    where.add_argument("--stack-name", required=required, help="the deployed apilake stack (its outputs name the rest)")
    where.add_argument("--region", help="AWS region (default: from the environment or profile)")
    where.add_argument("--profile", help="AWS profile (default: from the environment)")
    shared.add_argument("--json", action="store_true", help="print one JSON document (stable keys) for scripts")
    return shared


def run_options() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--follow", action="store_true", help="watch the run (pages landed, queues) until it is done")
    shared.add_argument(
        "--timeout", type=float, default=3600, help="stop following after SECONDS (default %(default)s)"
    )
    shared.add_argument("--interval", type=float, default=15, help="seconds between looks (default %(default)s)")
    shared.add_argument(
        "--run-id", help="the run's id, not starting with sched- (the scheduled runs'; default: manual-<time>-<random>)"
    )
    shared.add_argument("--ingestion-date", type=runs.iso_date, help="the run's ingestion date (default: today)")
    return shared


def command(
    commands: Commands, name: str, summary: str, codes: str, parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """A command whose --help ends with its exit codes."""
    return commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=codes,
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_operator_commands(commands: Commands) -> None:
    stack, optional_stack = stack_options(required=True), stack_options(required=False)

    run = command(
        commands,
        "run",
        "start a run: the planner of --stack-name (or, --local, the whole flow on this machine)",
        epilog(
            "planned (with --follow: complete; --local: complete)",
            "--follow: settled incomplete (--local: incomplete)",
            "--follow: not complete in time",
        ),
        parents=[optional_stack, run_options()],
    )
    run.add_argument("--local", action="store_true", help="on this machine instead (moto for AWS; dev install)")
    run.add_argument("--sources", help="the sources to plan, a,b (--local: the sources FILE, default the checkout's)")
    run.add_argument("--since", help="incremental sources: an explicit window from this value (the mark stays)")
    run.add_argument("--until", help="and up to this value")
    local = run.add_argument_group("--local only")
    local.add_argument("--event", type=Path, help="planner event, JSON (default: the checkout's events/planner.json)")
    local.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret the sources use")
    local.add_argument("--visibility-timeout", type=int, help="seconds; shortens the template's to see retries sooner")
    run.set_defaults(func=cmd_run)

    backfill = command(
        commands,
        "backfill",
        "plan the date shards --from .. --to of some sources on the deployed stack",
        epilog("planned (with --follow: complete)", "--follow: settled incomplete", "--follow: not complete in time"),
        parents=[stack, run_options()],
    )
    backfill.add_argument("--sources", required=True, help="the sources to backfill, a,b")
    backfill.add_argument("--from", type=runs.iso_date, required=True, help="first shard, YYYY-MM-DD")
    backfill.add_argument("--to", type=runs.iso_date, required=True, help="last shard, YYYY-MM-DD (included)")
    backfill.set_defaults(func=runs.cmd_backfill)

    status = command(
        commands,
        "status",
        "did the run finish? pages expected vs landed, what is missing and why, DLQ depths",
        epilog("the run is complete", "it is not"),
        parents=[optional_stack],
    )
    status.add_argument("--run", help="run id (default: the latest)")
    status.add_argument("--bucket", help="or read the ledger of this lake bucket (no DLQ depths)")
    status.add_argument("--sources", type=Path, help=DRIFT_SOURCES_HELP)
    status.set_defaults(func=operate.cmd_status)

    dlq = commands.add_parser("dlq", help="a source's dead-letter queue")
    dlq_actions = dlq.add_subparsers(required=True, metavar="ACTION")
    dlq_peek = command(
        dlq_actions,
        "peek",
        "the messages in a source's DLQ, left in place: run, shard, page, receives, the page's last failure",
        epilog("the DLQ is empty", "messages are in it"),
        parents=[stack],
    )
    dlq_peek.add_argument("--source", required=True, help="the source whose DLQ to look at")
    dlq_peek.set_defaults(func=operate.cmd_dlq_peek)

    redrive = command(
        commands,
        "redrive",
        "move a source's DLQ back to its queue (SQS's message move task) and wait for it",
        epilog(
            "the messages moved (--no-wait: the move started)",
            "the move task FAILED or was CANCELLED",
            "the move task still running at --timeout",
        ),
        parents=[stack],
    )
    redrive.add_argument("--source", required=True, help="the source whose DLQ to move back")
    redrive.add_argument("--no-wait", action="store_true", help="start the move task and return")
    redrive.add_argument("--per-second", type=int, help="SQS's MaxNumberOfMessagesPerSecond (default: SQS's pace)")
    redrive.add_argument("--timeout", type=float, default=900, help="stop waiting after SECONDS (default %(default)s)")
    redrive.add_argument("--interval", type=float, default=5, help="seconds between looks (default %(default)s)")
    redrive.set_defaults(func=operate.cmd_redrive)

    report = command(
        commands,
        "report",
        "where a run's report is: the local lake's, or the deployed bucket's downloaded to <home>/reports/<run>/; "
        "built now from the ledger into <home>/reports/<run>/ when none is stored yet",
        epilog("the report is there (stored, or built now)"),
        parents=[optional_stack],
    )
    report.add_argument("--run", help="run id (default: the latest)")
    report.add_argument("--bucket", help="or the report in this lake bucket (built without DLQ depths)")
    report.add_argument("--rebuild", action="store_true", help="build it now from the ledger even if one is stored")
    report.add_argument("--open", action="store_true", help="open report.html in the web browser")
    report.add_argument("--sources", type=Path, help=DRIFT_SOURCES_HELP + " (for a report built now)")
    report.set_defaults(func=runreport.cmd_report)

    recurate = command(
        commands,
        "curate",
        "curate a source's ingestion dates again on the deployed stack (after accepting a type change), as the "
        "completeness check does, and wait for them",
        epilog("every date curated", "a date's curation failed (twice)", "still running at --timeout"),
        parents=[stack],
    )
    recurate.add_argument("--source", required=True, help="the source, one with columns")
    recurate.add_argument("--from", dest="from_", type=runs.iso_date, help="first ingestion date (default: the first)")
    recurate.add_argument("--to", type=runs.iso_date, help="last ingestion date, included (default: the last)")
    recurate.add_argument(
        "--sources",
        type=Path,
        default=operate.SOURCES_FILE,
        help="the deployed sources file (default: %(default)s, from a checkout)",
    )
    recurate.add_argument(
        "--timeout", type=float, default=3600, help="stop waiting after SECONDS (default %(default)s)"
    )
    recurate.add_argument("--interval", type=float, default=15, help="seconds between looks (default %(default)s)")
    recurate.set_defaults(func=curate.cmd_curate)

    sources = commands.add_parser("sources", help="the sources file")
    actions = sources.add_subparsers(required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check a sources file; errors name the source and the field")
    validate.add_argument(
        "file", type=Path, nargs="?", default=operate.SOURCES_FILE, help="default: %(default)s (from a checkout)"
    )
    validate.set_defaults(func=operate.cmd_sources_validate)
    try_source.add_try_command(actions, operate.SOURCES_FILE)
    schema = actions.add_parser(
        "schema", help="write the JSON Schema of the sources file, for editors (completion, checks as you type)"
    )
    schema.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE (default: print it)")
    schema.set_defaults(func=sources_schema.cmd_sources_schema)


def add_dev_commands(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the scheduled planner -> queues -> workers flow end to end on this machine, against fake vendors",
    )
    demo.add_argument("--scale", type=float, default=1.0, help="fraction of the demo's data set (default 1)")
    demo.set_defaults(func=develop.cmd_demo)

    query = command(
        commands,
        "query",
        "SQL over the local lake with DuckDB (raw; per source its raw table, _lines, _curated, _current, _recent; "
        "apilake_runs), or --athena on the deployed stack",
        epilog("the query succeeded", timed_out="--athena: still running at --timeout (cancelled)"),
        parents=[stack_options(required=False)],
    )
    query.add_argument("sql")
    query.add_argument("--athena", action="store_true", help="run it on Athena, in the stack's workgroup and database")
    query.add_argument(
        "--timeout", type=float, default=300, help="--athena: give up after SECONDS (default %(default)s)"
    )
    query.add_argument(
        "--interval", type=float, default=1, help="--athena: seconds between looks (default %(default)s)"
    )
    query.add_argument(
        "--max-rows",
        type=positive_int,
        help=f"--athena: read at most ROWS of the result, and say when it has more (default {MAX_ROWS})",
    )
    query.set_defaults(func=cmd_query)

    soak = commands.add_parser("soak", help="the local flow under every fault kind, then a verdict; exit 1 on loss")
    soak.add_argument("--pages", type=int, default=2000, help="about this many pages over the four sources")
    soak.add_argument("--seed", type=int, default=7, help="seed of the fault draws")
    soak.add_argument("--visibility-timeout", type=int, default=6, help="seconds (redelivery speed)")
    soak.set_defaults(func=develop.cmd_soak)

    template = commands.add_parser("template", help="regenerate template.yaml from the sources file")
    template.add_argument("--check", action="store_true", help="only check that it is up to date")
    template.set_defaults(func=develop.cmd_template)

    develop.add_local_commands(commands)
    develop.add_schema_commands(commands)


STACK_RUN_OPTIONS = ("follow", "run_id", "ingestion_date", "since", "until", "json")
LOCAL_RUN_OPTIONS = ("event", "secret", "visibility_timeout")


def cmd_run(args: argparse.Namespace) -> int:
    """`run --local` (develop.cmd_run) or `run --stack-name` (runs.cmd_run): one of them, with its own options."""
    if args.local and args.stack_name:
        raise ApilakeError("run: give --local (the flow on this machine) or --stack-name (a deployed stack), not both")
    if not (args.local or args.stack_name):
        raise ApilakeError("run needs --local (the flow on this machine) or --stack-name (a deployed stack)")
    mode, others = ("--local", STACK_RUN_OPTIONS) if args.local else ("--stack-name", LOCAL_RUN_OPTIONS)
    given = [f"--{name.replace('_', '-')}" for name in others if getattr(args, name)]
    if given:
        raise ApilakeError(f"run {mode}: {', '.join(given)} {'is' if len(given) == 1 else 'are'} not for {mode}")
    if args.local:
        args.sources = Path(args.sources) if args.sources else None
        return develop.cmd_run(args)
    return runs.cmd_run(args)


def positive_int(text: str) -> int:
    """argparse's type of a count option: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def cmd_query(args: argparse.Namespace) -> int:
    """`query --athena` on the deployed stack (operate), else DuckDB over the local lake (develop)."""
    if args.athena:
        if not args.stack_name:
            raise ApilakeError("query --athena needs --stack-name: the stack whose workgroup and database to use")
        return operate.cmd_query_athena(args)
    athena_only = (("--stack-name", args.stack_name), ("--json", args.json), ("--max-rows", args.max_rows))
    given = [option for option, value in athena_only if value]
    if given:
        raise ApilakeError(f"query: {', '.join(given)} only with --athena (without it, DuckDB over the local lake)")
    return develop.cmd_query(args)


if __name__ == "__main__":
    raise SystemExit(main())
