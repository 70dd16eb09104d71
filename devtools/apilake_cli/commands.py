"""The commands of `apilake` (apilake_cli.main): what each takes, built only for the command run (each adder imports
its command's module), and each command's summary for `apilake --help`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apilake_cli.exits import epilog

type Commands = argparse._SubParsersAction[argparse.ArgumentParser]

# Schema drift is judged against the sources' pinned `columns`: those of the deployed sources file.
CHECKOUT_SOURCES_FILE = Path("layers/common/sources.yaml")  # operate.SOURCES_FILE (a test says they are one)
DRIFT_SOURCES_HELP = (
    f"the sources file whose `columns` the schema drift is judged against (default: {CHECKOUT_SOURCES_FILE} "
    "when run from a checkout; without one, no drift is shown)"
)


def stack_options(required: bool) -> argparse.ArgumentParser:
    """The options every operator command shares: the stack, its region and profile, and --json."""
    shared = argparse.ArgumentParser(add_help=False)
    where = shared.add_argument_group("deployed stack")
    where.add_argument("--stack-name", required=required, help="the deployed apilake stack (its outputs name the rest)")
    where.add_argument("--region", help="AWS region (default: from the environment or profile)")
    where.add_argument("--profile", help="AWS profile (default: from the environment)")
    shared.add_argument("--json", action="store_true", help="print one JSON document (stable keys) for scripts")
    return shared


LAKE_HELP = "or read this lake folder, e.g. `apilake ingest --lake`'s (default: <home>/lake)"


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
    shared.add_argument("--ingestion-date", type=iso_date, help="the run's ingestion date (default: today)")
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


type Adder = Callable[[Commands, list[str] | None], None]


def iso_date(text: str) -> Any:
    """argparse's type of a date option (apilake_cli.runs.iso_date, imported when a date is given)."""
    from apilake_cli.runs import iso_date as parse

    return parse(text)


RUN_SUMMARY = "start a run: the planner of --stack-name (or, --local, the whole flow on this machine)"


def add_run(commands: Commands, wanted: list[str] | None) -> None:
    run = command(
        commands,
        "run",
        RUN_SUMMARY,
        epilog(
            "planned (with --follow: complete; --local: complete)",
            "--follow: settled incomplete (--local: incomplete)",
            "--follow: not complete in time",
        ),
        parents=[stack_options(required=False), run_options()],
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


BACKFILL_SUMMARY = "plan the date shards --from .. --to of some sources on the deployed stack"


def add_backfill(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import runs

    backfill = command(
        commands,
        "backfill",
        BACKFILL_SUMMARY,
        epilog("planned (with --follow: complete)", "--follow: settled incomplete", "--follow: not complete in time"),
        parents=[stack_options(required=True), run_options()],
    )
    backfill.add_argument("--sources", required=True, help="the sources to backfill, a,b")
    backfill.add_argument("--from", type=runs.iso_date, required=True, help="first shard, YYYY-MM-DD")
    backfill.add_argument("--to", type=runs.iso_date, required=True, help="last shard, YYYY-MM-DD (included)")
    backfill.set_defaults(func=runs.cmd_backfill)


STATUS_SUMMARY = "did the run finish? pages expected vs landed, what is missing and why, DLQ depths"


def add_status(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import operate

    status = command(
        commands,
        "status",
        STATUS_SUMMARY,
        epilog("the run is complete", "it is not"),
        parents=[stack_options(required=False)],
    )
    status.add_argument("--run", help="run id (default: the latest)")
    status.add_argument("--bucket", help="or read the ledger of this lake bucket (no DLQ depths)")
    status.add_argument("--lake", type=Path, help=LAKE_HELP)
    status.add_argument("--sources", type=Path, help=DRIFT_SOURCES_HELP)
    status.set_defaults(func=operate.cmd_status)


DLQ_SUMMARY = "a source's dead-letter queue"


def add_dlq(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import operate

    dlq = commands.add_parser("dlq", help=DLQ_SUMMARY)
    dlq_actions = dlq.add_subparsers(required=True, metavar="ACTION")
    dlq_peek = command(
        dlq_actions,
        "peek",
        "the messages in a source's DLQ, left in place: run, shard, page, receives, the page's last failure",
        epilog("the DLQ is empty", "messages are in it"),
        parents=[stack_options(required=True)],
    )
    dlq_peek.add_argument("--source", required=True, help="the source whose DLQ to look at")
    dlq_peek.set_defaults(func=operate.cmd_dlq_peek)


REDRIVE_SUMMARY = "move a source's DLQ back to its queue (SQS's message move task) and wait for it"


def add_redrive(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import operate

    redrive = command(
        commands,
        "redrive",
        REDRIVE_SUMMARY,
        epilog(
            "the messages moved (--no-wait: the move started)",
            "the move task FAILED or was CANCELLED",
            "the move task still running at --timeout",
        ),
        parents=[stack_options(required=True)],
    )
    redrive.add_argument("--source", required=True, help="the source whose DLQ to move back")
    redrive.add_argument("--no-wait", action="store_true", help="start the move task and return")
    redrive.add_argument("--per-second", type=int, help="SQS's MaxNumberOfMessagesPerSecond (default: SQS's pace)")
    redrive.add_argument("--timeout", type=float, default=900, help="stop waiting after SECONDS (default %(default)s)")
    redrive.add_argument("--interval", type=float, default=5, help="seconds between looks (default %(default)s)")
    redrive.set_defaults(func=operate.cmd_redrive)


REPORT_SUMMARY = (
    "where a run's report is: the local lake's, or the deployed bucket's downloaded to <home>/reports/<run>/; "
    "built now from the ledger into <home>/reports/<run>/ when none is stored yet"
)


def add_report(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import runreport

    report = command(
        commands,
        "report",
        REPORT_SUMMARY,
        epilog("the report is there (stored, or built now)"),
        parents=[stack_options(required=False)],
    )
    report.add_argument("--run", help="run id (default: the latest)")
    report.add_argument("--bucket", help="or the report in this lake bucket (built without DLQ depths)")
    report.add_argument("--lake", type=Path, help=LAKE_HELP)
    report.add_argument("--rebuild", action="store_true", help="build it now from the ledger even if one is stored")
    report.add_argument("--open", action="store_true", help="open report.html in the web browser")
    report.add_argument("--sources", type=Path, help=DRIFT_SOURCES_HELP + " (for a report built now)")
    report.set_defaults(func=runreport.cmd_report)


CURATE_SUMMARY = (
    "curate a source's ingestion dates again on the deployed stack (after accepting a type change), as the "
    "completeness check does, and wait for them"
)


def add_curate(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import curate, runs

    recurate = command(
        commands,
        "curate",
        CURATE_SUMMARY,
        epilog("every date curated", "a date's curation failed (twice)", "still running at --timeout"),
        parents=[stack_options(required=True)],
    )
    recurate.add_argument("--source", required=True, help="the source, one with columns")
    recurate.add_argument("--from", dest="from_", type=runs.iso_date, help="first ingestion date (default: the first)")
    recurate.add_argument("--to", type=runs.iso_date, help="last ingestion date, included (default: the last)")
    recurate.add_argument(
        "--sources",
        type=Path,
        default=CHECKOUT_SOURCES_FILE,
        help="the deployed sources file (default: %(default)s, from a checkout)",
    )
    recurate.add_argument(
        "--timeout", type=float, default=3600, help="stop waiting after SECONDS (default %(default)s)"
    )
    recurate.add_argument("--interval", type=float, default=15, help="seconds between looks (default %(default)s)")
    recurate.set_defaults(func=curate.cmd_curate)


SOURCES_SUMMARY = "the sources file"
TRY_SUMMARY = (
    "fetch page 1 of a source from the real API (read only, no AWS) and show what a worker and the planner would "
    "make of it"
)


def add_sources(commands: Commands, wanted: list[str] | None) -> None:
    """`sources validate | try | schema`: the action run built whole (`try` imports the HTTP client and planner)."""
    sources = commands.add_parser("sources", help=SOURCES_SUMMARY)
    actions = sources.add_subparsers(required=True, metavar="ACTION")
    if wanted is None or wanted[:1] == ["validate"]:
        from apilake_cli import operate

        validate = actions.add_parser("validate", help="check a sources file; errors name the source and the field")
        validate.add_argument(
            "file", type=Path, nargs="?", default=CHECKOUT_SOURCES_FILE, help="default: %(default)s (from a checkout)"
        )
        validate.set_defaults(func=operate.cmd_sources_validate)
    else:
        actions.add_parser("validate", help="check a sources file; errors name the source and the field")
    if wanted is None or wanted[:1] == ["try"]:
        from apilake_cli import try_source

        try_source.add_try_command(actions, CHECKOUT_SOURCES_FILE)
    else:
        actions.add_parser("try", help=TRY_SUMMARY)
    schema_help = "write the JSON Schema of the sources file, for editors (completion, checks as you type)"
    if wanted is None or wanted[:1] == ["schema"]:
        from apilake_cli import sources_schema

        schema = actions.add_parser("schema", help=schema_help)
        schema.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE (default: print it)")
        schema.set_defaults(func=sources_schema.cmd_sources_schema)
    else:
        actions.add_parser("schema", help=schema_help)


INGEST_SUMMARY = (
    "a run in this process, no queues: the planner, every source at once (a thread pool each, its budget's "
    "max_concurrency), pages to a lake folder (default <home>/lake) or a bucket; again with the same --run-id, "
    "it continues from the ledger"
)


def add_ingest(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import ingest

    ingest.add_ingest_command(commands)


DEMO_SUMMARY = "the scheduled planner -> queues -> workers flow end to end on this machine, against fake vendors"


def add_demo(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import develop

    demo = commands.add_parser("demo", help=DEMO_SUMMARY)
    demo.add_argument("--scale", type=float, default=1.0, help="fraction of the demo's data set (default 1)")
    demo.set_defaults(func=develop.cmd_demo)


QUERY_SUMMARY = (
    "SQL over the local lake with DuckDB (raw; per source its raw table, _lines, _curated, _current, _recent; "
    "apilake_runs), or --athena on the deployed stack"
)


def add_query(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli.athena import MAX_ROWS

    query = command(
        commands,
        "query",
        QUERY_SUMMARY,
        epilog("the query succeeded", timed_out="--athena: still running at --timeout (cancelled)"),
        parents=[stack_options(required=False)],
    )
    query.add_argument("sql")
    query.add_argument("--lake", type=Path, help="the lake folder DuckDB reads (default: <home>/lake)")
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


SOAK_SUMMARY = "the local flow under every fault kind, then a verdict; exit 1 on loss"


def add_soak(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import develop

    soak = commands.add_parser("soak", help=SOAK_SUMMARY)
    soak.add_argument("--pages", type=int, default=2000, help="about this many pages over the four sources")
    soak.add_argument("--seed", type=int, default=7, help="seed of the fault draws")
    soak.add_argument("--visibility-timeout", type=int, default=6, help="seconds (redelivery speed)")
    soak.set_defaults(func=develop.cmd_soak)


TEMPLATE_SUMMARY = "regenerate template.yaml from the sources file"


def add_template(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import develop

    template = commands.add_parser("template", help=TEMPLATE_SUMMARY)
    template.add_argument("--check", action="store_true", help="only check that it is up to date")
    template.set_defaults(func=develop.cmd_template)


def add_local(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import develop

    develop.add_local_commands(commands)


def add_schema(commands: Commands, wanted: list[str] | None) -> None:
    from apilake_cli import develop

    develop.add_schema_commands(commands)


# Each command: its name, the summary `apilake --help` lists, and what builds it whole (importing its module).
COMMANDS: list[tuple[str, str, Adder]] = [
    ("run", RUN_SUMMARY, add_run),
    ("backfill", BACKFILL_SUMMARY, add_backfill),
    ("status", STATUS_SUMMARY, add_status),
    ("dlq", DLQ_SUMMARY, add_dlq),
    ("redrive", REDRIVE_SUMMARY, add_redrive),
    ("report", REPORT_SUMMARY, add_report),
    ("curate", CURATE_SUMMARY, add_curate),
    ("sources", SOURCES_SUMMARY, add_sources),
    ("ingest", INGEST_SUMMARY, add_ingest),
    ("demo", DEMO_SUMMARY, add_demo),
    ("query", QUERY_SUMMARY, add_query),
    ("soak", SOAK_SUMMARY, add_soak),
    ("template", TEMPLATE_SUMMARY, add_template),
    ("local", "the local AWS stand-in for `sam local invoke` (dev)", add_local),
    ("schema", "a source's pinned schema (its columns in the sources file) (dev)", add_schema),
]


STACK_RUN_OPTIONS = ("follow", "run_id", "ingestion_date", "since", "until", "json")
LOCAL_RUN_OPTIONS = ("event", "secret", "visibility_timeout")


def cmd_run(args: argparse.Namespace) -> int:
    """`run --local` (develop.cmd_run) or `run --stack-name` (runs.cmd_run): one of them, with its own options."""
    from apilake.exceptions import ApilakeError

    if args.local and args.stack_name:
        raise ApilakeError("run: give --local (the flow on this machine) or --stack-name (a deployed stack), not both")
    if not (args.local or args.stack_name):
        raise ApilakeError("run needs --local (the flow on this machine) or --stack-name (a deployed stack)")
    mode, others = ("--local", STACK_RUN_OPTIONS) if args.local else ("--stack-name", LOCAL_RUN_OPTIONS)
    given = [f"--{name.replace('_', '-')}" for name in others if getattr(args, name)]
    if given:
        raise ApilakeError(f"run {mode}: {', '.join(given)} {'is' if len(given) == 1 else 'are'} not for {mode}")
    if args.local:
        from apilake_cli import develop

        args.sources = Path(args.sources) if args.sources else None
        return develop.cmd_run(args)
    from apilake_cli import runs

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
    from apilake.exceptions import ApilakeError

    if args.athena and args.lake:
        raise ApilakeError("query: --lake is the folder DuckDB reads, not for --athena")
    if args.athena:
        if not args.stack_name:
            raise ApilakeError("query --athena needs --stack-name: the stack whose workgroup and database to use")
        from apilake_cli import operate

        return operate.cmd_query_athena(args)
    athena_only = (("--stack-name", args.stack_name), ("--json", args.json), ("--max-rows", args.max_rows))
    given = [option for option, value in athena_only if value]
    if given:
        raise ApilakeError(f"query: {', '.join(given)} only with --athena (without it, DuckDB over the local lake)")
    from apilake_cli import develop

    return develop.cmd_query(args)
