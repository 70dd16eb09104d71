"""The dev commands: the demo, a local run against real vendors, SQL over the lake folder, the soak, and
the template generator. They need the dev install from a checkout (`pip install -e '.[dev]'`: moto,
DuckDB, jinja2, ...), so their modules are imported here, inside each command, and never by
`apilake status` or `apilake redrive`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apilake.exceptions import ApilakeError
from apilake.ledger import Ledger
from apilake.marks import MarkReport, MarkStore, mark_reports
from apilake_cli.lakefolder import local_lake
from apilake_cli.output import format_table, print_status, print_summary

if TYPE_CHECKING:
    from apilake_dev.demo import DemoResult

DEV_INSTALL = "pip install -e '.[dev]'"


@contextlib.contextmanager
def dev_install(command: str) -> Iterator[None]:
    """Around a dev command's imports: without the dev install, say which install the command needs."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ApilakeError(
            f"apilake {command} needs the dev install: {DEV_INSTALL} from a checkout (no module {exc.name!r})"
        ) from exc


def sql(lake: Path, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Columns and rows of ``statement`` over the lake folder; a DuckDB error is the user's to fix."""
    with dev_install("query"):
        import duckdb

        from apilake_dev import query
    try:
        return query.run(lake, statement)
    except duckdb.Error as exc:
        raise ApilakeError(f"query failed: {exc}") from exc


def cmd_demo(args: argparse.Namespace) -> int:
    with dev_install("demo"):
        from apilake_dev import demo
    home: Path = args.home
    print(
        "apilake demo: the scheduled planner -> queues -> workers flow on this machine "
        "(moto for AWS, fake vendors on 127.0.0.1, DuckDB for SQL)\n"
    )
    demo_run = demo.run_demo(home, scale=args.scale)
    result, sets = demo_run.first, demo_run.datasets
    print()
    print_summary(result, expected={d.name: d.total for d in sets})
    print()
    print_status(result.status, home, demo_run.marks[0] if demo_run.marks else None)
    if demo_run.second is not None:
        print_second_run(demo_run)
    print(f"\nlake folder: {home / 'lake'}  (gzip NDJSON, keys as in S3)")
    print(
        "catalog (Glue, emulated): "
        + ", ".join(f"{c['table']} ({c['partitions']} partitions)" for c in demo_run.last.catalog.values())
    )
    for title, statement in demo.example_queries():
        print(f"\n{title}:\n  {statement}\n")
        print(format_table(*sql(home / "lake", statement)))
    print(
        '\nNext: apilake query "select source, count(*) from raw group by 1"   ·   apilake status'
        f"   ·   logs in {home / 'logs'}"
    )
    return 0 if demo_run.ok else 1


def print_second_run(demo_run: DemoResult) -> None:
    """The incremental sources' second run: only what changed landed; requests and pages against the first."""
    second = demo_run.second
    assert second is not None
    print()
    ran = {name: row for name, row in second.sources.items() if name in demo_run.requests}
    print_summary(replace(second, sources=ran), expected={name: len(ids) for name, ids in demo_run.changed.items()})
    rows = [
        (name, first, again, demo_run.first.sources[name].pages, second.sources[name].pages)
        for name, (first, again) in demo_run.requests.items()
    ]
    print("\nvendor requests and pages, full first run vs incremental second run:")
    print(format_table(["source", "requests 1st", "requests 2nd", "pages 1st", "pages 2nd"], rows))
    print()
    print_status(second.status, None, demo_run.marks[1] if len(demo_run.marks) > 1 else None)


def cmd_run(args: argparse.Namespace) -> int:
    with dev_install("run --local"):
        from apilake_dev import paths
        from apilake_dev.local.run import run_local
    event = json.loads((args.event or paths.PLANNER_EVENT).read_text())
    result = run_local(
        args.sources or paths.SOURCES,
        args.home,
        event,
        secrets=parse_secrets(args.secret),
        visibility_timeout=args.visibility_timeout,
    )
    print()
    print_summary(result)
    print()
    print_status(result.status, args.home, folder_marks(args.home / "lake", result.run_id))
    return 0 if result.ok else 1


def parse_secrets(pairs: list[str]) -> dict[str, str]:
    """``--secret NAME=VALUE`` options: secret name -> value."""
    secrets = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ApilakeError(f"--secret {pair.split('=')[0]!r}: expected NAME=VALUE")
        secrets[name] = value
    return secrets


def folder_marks(lake: Path, run_id: str) -> dict[str, MarkReport] | None:
    """The incremental sources' marks and windows of a run, from the mirrored lake folder."""
    from apilake.folder_store import FolderClient

    if not (lake / "ledger").exists():
        return None
    store = FolderClient(lake)
    manifest = Ledger(store, "local").read_manifest(run_id) if run_id and (lake / "ledger").exists() else None
    return mark_reports(MarkStore(store, "local"), manifest) if manifest else None


def cmd_query(args: argparse.Namespace) -> int:
    print(format_table(*sql(local_lake(args), args.sql)))
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    with dev_install("soak"):
        from apilake_dev import soak
    result = soak.run_soak(args.home, pages=args.pages, seed=args.seed, visibility_timeout=args.visibility_timeout)
    print("\ninjected faults:")
    print(format_table(["fault", "count"], sorted(result.injected.items())))
    print(f"\n{result.pages_total} pages, {result.result.wall_seconds:.0f}s")
    for verdict in result.verdicts:
        print(verdict.line())
        for detail in verdict.details:
            print(f"  {detail}")
    complete = result.result.status is not None and result.result.status.complete
    print(f"status after redrive: complete: {'yes' if complete else 'NO'}")
    return 0 if result.ok else 1


def cmd_template(args: argparse.Namespace) -> int:
    with dev_install("template"):
        from apilake_dev.template import generate
    return generate.main(["--check"] if args.check else [])


def add_local_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`apilake local up`: the local AWS stand-in that `sam local invoke --env-vars` reaches."""
    local = commands.add_parser("local", help="the local AWS stand-in for `sam local invoke` (dev)")
    actions = local.add_subparsers(required=True, metavar="ACTION")
    up = actions.add_parser(
        "up",
        help="moto's server with the template's bucket, queues and secrets, and an env-vars file for "
        "`sam local invoke`; runs until Ctrl-C",
    )
    up.add_argument(
        "--port", type=int, default=5100, help="port of the stand-in (default %(default)s; 0: any free one)"
    )
    up.add_argument(
        "--bind",
        default="127.0.0.1",
        help="address it listens on (default %(default)s; on Linux, 0.0.0.0 or the Docker bridge's address, "
        "for containers to reach it)",
    )
    up.add_argument(
        "--endpoint-host",
        default="host.docker.internal",
        help="the name the functions' containers reach this machine by (default %(default)s)",
    )
    up.add_argument(
        "--sources",
        type=Path,
        help="sources file the functions read, at a path they can open (default: the built layer's "
        "/opt/python/sources.yaml, from layers/common/sources.yaml); its sources must be template.yaml's",
    )
    up.add_argument("--env-vars", type=Path, help="the env-vars file to write (default: <home>/sam-env-vars.json)")
    up.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret the sources use")
    up.set_defaults(func=cmd_local_up)


def add_schema_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`apilake schema infer`: a source's ``columns:`` block from the local lake's records."""
    schema = commands.add_parser("schema", help="a source's pinned schema (its columns in the sources file) (dev)")
    actions = schema.add_subparsers(required=True, metavar="ACTION")
    infer = actions.add_parser(
        "infer",
        help="print the columns: block inferred from the source's records in the local lake folder (to paste into "
        "the sources file, or to compare with what it declares)",
    )
    infer.add_argument("--source", required=True, help="the source (its raw/source=<name>/ pages are read)")
    infer.add_argument("--lake", type=Path, help="the lake folder (default: <home>/lake)")
    infer.add_argument(
        "--sources",
        type=Path,
        help="the sources file whose declared columns the inference is compared with (default: the checkout's "
        "layers/common/sources.yaml, when it declares the source)",
    )
    infer.set_defaults(func=cmd_schema_infer)


def cmd_schema_infer(args: argparse.Namespace) -> int:
    with dev_install("schema infer"):
        from apilake_dev import paths, schema
    from apilake.config import load_sources

    found = schema.infer(args.lake or args.home / "lake", args.source)
    declared = None
    path = args.sources or paths.SOURCES
    if args.sources or path.exists():
        by_name = load_sources(path).by_name
        if args.source in by_name:
            declared = by_name[args.source].columns
    print(schema.render(found, declared))
    return 0


def wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def cmd_local_up(args: argparse.Namespace) -> int:
    with dev_install("local up"):
        from apilake_dev.local.sam_local import DEFAULT_ENV_VARS_FILE, LocalUp
    env_vars = args.env_vars or args.home / DEFAULT_ENV_VARS_FILE
    with LocalUp(
        env_vars,
        sources_file=args.sources,
        port=args.port,
        bind=args.bind,
        endpoint_host=args.endpoint_host,
        secrets=parse_secrets(args.secret),
    ) as up:
        print("apilake local up: " + "\n".join(up.describe()), flush=True)
        wait_for_interrupt()
    print("\nstopped")
    return 0
