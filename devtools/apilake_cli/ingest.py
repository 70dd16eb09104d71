"""`apilake ingest`: a run in this process (apilake.runner), to a lake folder or a bucket; the runtime install only
(`pip install .`), so that a container can run it.

Progress and the run summary go to stdout (with --json, the progress to stderr and one JSON document to stdout);
the JSON logs and EMF metrics of the workers to --log-file (default <home>/logs/ingest.log; "-": stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from apilake.config import SourcesFile, sources_from_bytes
from apilake.exceptions import ApilakeError
from apilake.marks import MarkStore, mark_reports
from apilake.observability import logger
from apilake_cli.exits import Exit, epilog
from apilake_cli.output import format_table, print_json, print_status

if TYPE_CHECKING:
    from apilake.planner import PlanRequest
    from apilake.runner import Runner, RunOutcome
    from apilake.runner_parts import PartLauncher

FOLDER_BUCKET = "local"  # the bucket name the ledger and the report carry for a lake folder
CHECKOUT_SOURCES = Path("layers/common/sources.yaml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# A scheduled run's id (apilake.planner.scheduled_run_id): its scheduled time, then a schedule's key, if any.
_SCHEDULED_ID = re.compile(r"sched-(\d{8}T\d{6}Z)(-[A-Za-z0-9-]+)?")


def add_ingest_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = (
        "a run in this process, no queues: the planner, every source at once (a thread pool each, its budget's "
        "max_concurrency), pages to a lake folder (default <home>/lake) or a bucket; again with the same --run-id, "
        "it continues from the ledger"
    )
    ingest = commands.add_parser(
        "ingest",
        help=summary,
        description=summary,
        epilog=epilog(
            "the run is complete",
            "it is not (pages failed, the planner failed, or --max-seconds passed): run again with its --run-id",
        )
        + "\n  (2 also: another process runs this run, a worker thread failed, or a part's process ended without "
        "its result)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument(
        "--sources",
        type=Path,
        help=f"the sources file (default: $APILAKE_SOURCES_FILE, else {CHECKOUT_SOURCES} from a checkout)",
    )
    where = ingest.add_mutually_exclusive_group()
    where.add_argument("--lake", type=Path, help="the lake folder, keys as in S3 (default: <home>/lake)")
    where.add_argument("--bucket", help="or the lake bucket (AWS, or --endpoint-url)")
    ingest.add_argument("--endpoint-url", help="with --bucket: S3 (and Secrets Manager) at this URL, e.g. moto's")
    ingest.add_argument(
        "--source", action="append", metavar="NAME", help="a source to run (repeat or a,b; default: all)"
    )
    ingest.add_argument("--run-id", help="the run's id; an existing run's id resumes it (default: manual-<time>-<hex>)")
    ingest.add_argument(
        "--scheduled",
        action="store_true",
        help="a scheduled run, as the planner's (trigger schedule, id sched-<its scheduled time, UTC>, ingestion "
        "date its day): the main stack's completeness check, run report, curated step and run alarms judge it; every "
        "source runs unless --source; again with the same --scheduled-time (or --run-id sched-...), that run resumed",
    )
    ingest.add_argument(
        "--scheduled-time",
        type=_instant,
        metavar="ISO8601",
        help="with --scheduled: the schedule's fire time, e.g. 2025-01-31T02:00:00Z (EventBridge Scheduler's "
        "<aws.scheduler.scheduled-time>); default: now, floored to the minute",
    )
    ingest.add_argument(
        "--max-seconds",
        type=_positive,
        help="take no page after this many seconds: the pages in flight finish, the ledger says what is missing, "
        "exit 1 (resume with the same --run-id)",
    )
    ingest.add_argument("--ingestion-date", help="the run's ingestion date, YYYY-MM-DD (default: today)")
    ingest.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a secret the sources use (else read from Secrets Manager)",
    )
    ingest.add_argument(
        "--workers-per-source", type=_positive, help="threads per source (default: its budget's max_concurrency)"
    )
    ingest.add_argument(
        "--processes",
        type=_processes,
        default="auto",
        help="processes the run's sources are spread over, whole families each (a parent with its children, a "
        "budget group's sources): Python runs one thread at a time, so a run that parses and compresses many pages "
        "uses one CPU a process (default auto: the CPUs this process may use; 1: this process only)",
    )
    ingest.add_argument(
        "--retry-delay",
        type=float,
        default=5.0,
        help="seconds before a failed page is tried again, doubled each time up to 60 (default %(default)s)",
    )
    ingest.add_argument(
        "--log-file", help='the JSON logs and EMF metrics (default <home>/logs/ingest.log; "-": stderr)'
    )
    ingest.add_argument("--log-level", choices=LOG_LEVELS, default="WARNING", help="(default %(default)s)")
    ingest.add_argument("--json", action="store_true", help="one JSON document on stdout (progress on stderr)")
    ingest.set_defaults(func=cmd_ingest)


def _instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        example = "2025-01-31T02:00:00Z"
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time such as {example}, got {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: give Z or an offset")
    return when.astimezone(UTC)


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _processes(text: str) -> int:
    return usable_cpus() if text == "auto" else _positive(text)


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: those it may run on, fewer when its cgroup's quota is less (a container's
    `--cpus`, an ECS task's CPU units: 0.5 vCPU is 1 here, 2.5 is 3)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


def sources_path(given: Path | None) -> Path:
    if given is not None:
        return given
    from_env = os.environ.get("APILAKE_SOURCES_FILE")
    return Path(from_env) if from_env else CHECKOUT_SOURCES


class LocalSecrets:
    """Secrets Manager's ``get_secret_value`` for the secrets given on the command line, the others from the real
    one (created when first asked)."""

    def __init__(self, given: dict[str, str], endpoint_url: str | None) -> None:
        self._given = given
        self._endpoint_url = endpoint_url
        self._client: Any = None

    def get_secret_value(self, SecretId: str, **options: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if SecretId in self._given:
            return {"Name": SecretId, "SecretString": self._given[SecretId]}
        if self._client is None:
            import boto3  # only for a secret not given (a lake folder's run may need no AWS at all)

            self._client = boto3.session.Session().client("secretsmanager", endpoint_url=self._endpoint_url)
        answer: dict[str, Any] = self._client.get_secret_value(SecretId=SecretId, **options)
        return answer


def parse_secrets(pairs: list[str]) -> dict[str, str]:
    secrets = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ApilakeError(f"--secret {pair.split('=')[0]!r}: expected NAME=VALUE")
        secrets[name] = value
    return secrets


def workers_of(sources: SourcesFile, names: list[str] | None, per_source: int | None) -> int:
    return sum(per_source or source.budget.max_concurrency for source in sources.select(names))


@contextlib.contextmanager
def logs_to(stream: IO[str], level: str) -> Iterator[None]:
    """The workers' JSON logs and EMF metrics (printed by Powertools) to ``stream`` while the run lasts."""
    handler = logger.registered_handler
    previous = getattr(handler, "stream", None)
    if hasattr(handler, "setStream"):
        handler.setStream(stream)
    previous_level = logger.log_level
    logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        logger.setLevel(previous_level)  # as it was: a later command of this process (a test's) logs at its own
        if previous is not None and hasattr(handler, "setStream"):
            handler.setStream(previous)


def cmd_ingest(args: argparse.Namespace) -> int:
    # The runner's modules only for this command: the others start without them.
    from apilake.auth import CredentialStore
    from apilake.folder_store import FolderClient, writing
    from apilake.http import new_session
    from apilake.planner import parse_planner_event
    from apilake.runner import Runner

    if args.endpoint_url and not args.bucket:
        raise ApilakeError("ingest: --endpoint-url goes with --bucket")
    # Read once: the parts get these very bytes (apilake.runner_parts), whatever happens to the file meanwhile.
    path = sources_path(args.sources)
    try:
        sources_text = path.read_bytes()
    except OSError as exc:
        raise ApilakeError(f"{path}: cannot read the sources file: {exc.strerror}") from None
    sources = sources_from_bytes(path, sources_text)
    names = [n.strip() for given in args.source or [] for n in given.split(",") if n.strip()] or None
    if args.scheduled:
        request = scheduled_request(
            sources, names, args.run_id, args.ingestion_date, datetime.now(UTC), args.scheduled_time
        )
    else:
        if args.scheduled_time:
            raise ApilakeError("ingest: --scheduled-time goes with --scheduled")
        event: dict[str, Any] = {"sources": names} if names else {}
        if args.run_id:
            event["run_id"] = args.run_id
        if args.ingestion_date:
            event["ingestion_date"] = args.ingestion_date
        request = parse_planner_event(event)
    threads = workers_of(sources, names, args.workers_per_source)
    lake: Path | None = None
    client: Any
    if args.bucket:
        client, bucket = bucket_client(args.endpoint_url, threads), args.bucket
    else:
        lake = args.lake or args.home / "lake"
        client, bucket = FolderClient(lake), FOLDER_BUCKET
    out = sys.stderr if args.json else sys.stdout

    def echo(line: str) -> None:
        print(line, file=out, flush=True)

    secrets = parse_secrets(args.secret)
    # A lake folder is this process's to write for the run (and its parts'): a second writer fails fast
    # (apilake.folder_store).
    held = writing(lake) if lake is not None else contextlib.nullcontext()
    with held, log_stream(_log_path(args)) as stream, logs_to(stream, args.log_level):
        runner = Runner(
            sources,
            client,
            bucket,
            new_session(pool_size=threads + 2),
            CredentialStore(LocalSecrets(secrets, args.endpoint_url)),
            workers_per_source=args.workers_per_source,
            retry_delay_seconds=args.retry_delay,
            echo=echo,
            max_seconds=args.max_seconds,
            processes=args.processes,
            launcher=_launcher(args, lake, bucket, secrets, sources_text) if args.processes > 1 else None,
        )
        where = f"bucket {bucket}" + (f" at {args.endpoint_url}" if args.endpoint_url else "") if lake is None else lake
        how = "in this process" if runner.processes == 1 else f"in up to {runner.processes} processes"
        echo(f"apilake ingest: run {request.run_id} {how}, to {where}")
        outcome = runner.run(request)
        report = _report(runner, outcome, sources, lake)
    if args.json:
        print_json(outcome_document(outcome))
    else:
        print_outcome(outcome, runner, report)
    if outcome.error:
        print(f"ingest: run {outcome.run_id} stopped: {outcome.error}", file=sys.stderr)
        return Exit.ERROR
    return Exit.DONE if outcome.ok else Exit.NOT_DONE


def scheduled_request(
    sources: SourcesFile,
    names: list[str] | None,
    run_id: str | None,
    ingestion_date: str | None,
    now: datetime,
    scheduled_time: datetime | None = None,
) -> PlanRequest:
    """`--scheduled`: the run the planner would plan for a schedule that fired at ``scheduled_time`` (the
    Scheduler's, so that a retried or duplicated task of one firing is the same run, and a task started late is
    still that day's), else this minute (``now`` floored); or, given its id, for that scheduled time (resumed).
    Every source that is not a child, unless ``names``: the task has one schedule, so a source's own ``schedule``
    (the Lambda stack's) does not leave it out."""
    from apilake.planner import PlanRequest, scheduled_run_id

    if ingestion_date:
        raise ApilakeError("ingest: --scheduled takes its ingestion date from its scheduled time, not --ingestion-date")
    if run_id is not None and scheduled_time is not None:
        raise ApilakeError("ingest --scheduled: give --scheduled-time or --run-id, not both (the id is the time's)")
    if run_id is None:
        when = (scheduled_time or now.astimezone(UTC).replace(second=0)).replace(microsecond=0)
        run_id = scheduled_run_id(when)
    elif match := _SCHEDULED_ID.fullmatch(run_id):
        when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    else:
        raise ApilakeError(
            f"ingest --scheduled: run id {run_id!r} is not a scheduled run's (sched-<YYYYMMDD>T<HHMMSS>Z[-<key>])"
        )
    selected = names or [source.name for source in sources.sources if source.parent is None]
    return PlanRequest(run_id=run_id, ingestion_date=when.date(), trigger="schedule", sources=selected)


def _launcher(
    args: argparse.Namespace, lake: Path | None, bucket: str, secrets: dict[str, str], sources_text: bytes
) -> PartLauncher:
    """How this run starts its parts (apilake.runner_parts): this interpreter, the same sources, lake and logs."""
    from apilake.runner_parts import PartLauncher

    fd = None
    if lake is not None:
        from apilake.folder_store import lock_fd

        fd = lock_fd(lake)
    template = {
        "sources_file": str(sources_path(args.sources)),
        "sources_text": sources_text.decode("utf-8"),
        "lake": str(lake.resolve()) if lake is not None else None,
        "bucket": bucket,
        "endpoint_url": args.endpoint_url,
        "lock_fd": fd,
        "secrets": secrets,
        "workers_per_source": args.workers_per_source,
        "retry_delay_seconds": args.retry_delay,
        "log_file": str(_log_path(args)),
        "log_level": args.log_level,
    }
    command = [sys.executable, "-P", "-m", "apilake_cli.ingest_part"]  # -P: not the working folder's modules
    return PartLauncher(command, template, [fd] if fd is not None else [])


def _log_path(args: argparse.Namespace) -> Path | str:
    return "-" if args.log_file == "-" else Path(args.log_file) if args.log_file else args.home / "logs" / "ingest.log"


@contextlib.contextmanager
def log_stream(path: Path | str) -> Iterator[IO[str]]:
    """The workers' logs: appended to ``path``, or stderr for "-"."""
    if path == "-":
        yield sys.stderr
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        yield stream


def bucket_client(endpoint_url: str | None, threads: int) -> Any:
    """The lake bucket's S3 client (AWS, or ``endpoint_url``), a connection for each of ``threads`` and some."""
    import boto3  # only for a bucket: a lake folder's run may need no AWS at all
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=threads + 8)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _report(runner: Runner, outcome: RunOutcome, sources: SourcesFile, lake: Path | None) -> str | None:
    """The run's report beside its manifest (as the completeness check writes it): where it is, or why not."""
    from apilake.report import report_keys, write_report

    if outcome.manifest is None:
        return None
    depths = {name: tally.dead for name, tally in outcome.sources.items()}
    try:
        write_report(runner.ledger, outcome.manifest, depths, datetime.now(UTC), sources, outcome.status)
    except (ClientError, BotoCoreError, ApilakeError) as exc:
        return f"not written: {exc}"
    key = report_keys(outcome.run_id)[1]
    return str(lake / key) if lake is not None else f"s3://{runner.bucket}/{key}"


def print_outcome(outcome: RunOutcome, runner: Runner, report: str | None) -> None:
    """The run summary as the local flow prints it: per source, then the run's status from the ledger."""
    print()
    state = "drained" if outcome.drained else "NOT drained (stopped)"
    if outcome.timed_out:
        state = "NOT drained (--max-seconds passed; the status below says what is missing)"
    processes = f" by {outcome.processes} processes" if outcome.processes > 1 else ""
    resumed = " (resumed)" if outcome.resumed else ""
    print(f"run {outcome.run_id}: {state} in {outcome.wall_seconds:.1f}s{processes}{resumed}")
    if outcome.planner_error:
        print(f"planner error: {outcome.planner_error}")
    rows = [(s.source, s.pages, s.records, s.bytes, s.retries, s.throttled, s.dead) for s in outcome.sources.values()]
    print(format_table(["source", "pages", "records", "bytes", "retries", "429s", "dead"], rows))
    for item in outcome.dead_items:
        print(f"  dead (failed on every attempt): {item.model_dump_json()}")
    print()
    marks = mark_reports(MarkStore(runner.ledger.client, runner.bucket), outcome.manifest) if outcome.manifest else None
    print_status(outcome.status, None, marks)
    if report:
        print(f"run report: {report}")
    rate = outcome.pages / outcome.wall_seconds if outcome.wall_seconds else 0.0
    print(
        f"ingest: {outcome.pages} pages, {outcome.records} records in {outcome.wall_seconds:.1f}s ({rate:.0f} pages/s)"
    )


def outcome_document(outcome: RunOutcome) -> dict[str, Any]:
    """--json: the run's figures (stable keys)."""
    return {
        "run_id": outcome.run_id,
        "resumed": outcome.resumed,
        "drained": outcome.drained,
        "complete": outcome.ok,
        "wall_seconds": round(outcome.wall_seconds, 3),
        "pages": outcome.pages,
        "records": outcome.records,
        "pages_per_second": round(outcome.pages / outcome.wall_seconds, 1) if outcome.wall_seconds else None,
        "planner_error": outcome.planner_error,
        "error": outcome.error,
        "timed_out": outcome.timed_out,
        "processes": outcome.processes,
        "sources": {name: asdict(tally) for name, tally in outcome.sources.items()},
        "dead": [json.loads(item.model_dump_json()) for item in outcome.dead_items],
    }
