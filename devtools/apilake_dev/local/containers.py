"""Lambda containers on one machine: one process per (worker, concurrency slot), each polling its
queue through :class:`SqsEventSource` and invoking the unchanged worker handler in-process.

A process is what a Lambda container is: its own interpreter, its own per-container caches (clients,
sources, the vendor pacer), its own environment. At most MaximumConcurrency of them poll a queue, so
at most that many batches of a source are in flight, as the event source mapping's ScalingConfig does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from apilake_dev import paths
from apilake_dev.local.aws import LocalDeployment, WorkerSpec
from apilake_dev.local.event_source import PollStats, SqsEventSource

WORKER_APP = paths.WORKER_APP
PLANNER_APP = paths.PLANNER_APP
# Third-party libraries a container imports, loaded once in the fork server so that containers start
# in milliseconds. apilake's own modules are not: each container imports them after its environment
# is set, as a Lambda cold start does.
PRELOAD = [
    "boto3",
    "botocore.httpsession",
    "pydantic",
    "requests.adapters",
    "yaml",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.utilities.parameters",
]


def process_context() -> Any:
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


# Containers yield the CPU to the emulator: in AWS, the services do not share a machine with Lambda.
CONTAINER_NICENESS = 10


def _nothing() -> None:
    pass


def start_fork_server() -> None:
    """Start the fork server (and its imports, the containers' shared cold start) now, not at the
    first invocation: for measurements that are about steady work."""
    process = process_context().Process(target=_nothing, name="warm-up")
    process.start()
    process.join(timeout=120)


def _enter_container(env: dict[str, str], log_path: str) -> None:
    """Send this process's output to its log file and set its environment, before apilake is imported."""
    os.nice(CONTAINER_NICENESS)
    log = Path(log_path).open("a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    os.environ.update(env)


def _load_app(path: Path, name: str) -> Any:
    import importlib.util

    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _planner_main(env: dict[str, str], event: dict[str, Any], log_path: str, results: Any) -> None:
    """Invoke the planner handler once in a container of its own; put ("ok", summary) or ("error", text)."""
    _enter_container(env, log_path)
    from apilake.exceptions import ApilakeError
    from apilake_dev.local.event_source import LambdaContextStub

    planner = _load_app(PLANNER_APP, "planner_app")
    try:
        results.put(("ok", planner.handler(event, LambdaContextStub("Planner", 300))))
    except ApilakeError as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def invoke_planner(env: dict[str, str], event: dict[str, Any], log_path: Path) -> tuple[str, Any]:
    context = process_context()
    results = context.Queue()
    process = context.Process(target=_planner_main, args=(env, event, str(log_path), results), name="Planner")
    process.start()
    outcome: tuple[str, Any] = results.get(timeout=600)
    process.join(timeout=30)
    return outcome


CRASH_EXIT_CODE = 70  # an injected container death, respawned like a new Lambda container


@dataclass(frozen=True)
class ContainerFaults:
    """Faults of the platform, not of the vendor, each at a rate per record (reproducibly seeded).

    - ``crash``: the container dies after the handler returned, before its messages are deleted;
    - ``put_failure``: an S3 PutObject fails (botocore ``before-call`` hook on the worker's client);
    - ``duplicate``: SQS delivers a record's message once more (at-least-once delivery).
    """

    crash: float = 0.0
    put_failure: float = 0.0
    duplicate: float = 0.0
    seed: int = 11


@dataclass
class ContainerReport:
    source: str
    container: str
    stats: PollStats
    totals: dict[str, float] = field(default_factory=dict)  # metric -> sum, for this source
    injected: dict[str, int] = field(default_factory=dict)


def _container_main(
    spec: WorkerSpec, name: str, env: dict[str, str], log_path: str, stop: Event, reports: Any, faults: ContainerFaults
) -> None:
    """The body of one container process: its own interpreter state, environment and caches."""
    _enter_container({**env, **spec.environment}, log_path)
    import random

    import boto3
    from botocore.exceptions import ClientError

    from apilake.aws import default_clients
    from apilake.observability import totals

    worker = _load_app(WORKER_APP, "worker_app")
    rng = random.Random(f"{faults.seed}:{name}")
    injected = {"crash": 0, "put_failure": 0, "duplicate": 0}
    sqs = boto3.client("sqs")

    def failing_put(**_: Any) -> None:
        if rng.random() < faults.put_failure:
            injected["put_failure"] += 1
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")

    if faults.put_failure:
        default_clients().s3.meta.events.register("before-call.s3.PutObject", failing_put)

    def report() -> None:
        sums = {metric: value for (src, metric), value in totals.snapshot().items() if src == spec.source}
        reports.put(ContainerReport(spec.source, name, source.stats, sums, dict(injected)))

    def handler(event: dict[str, Any], context: Any) -> Any:
        for record in event["Records"]:
            if rng.random() < faults.duplicate:
                injected["duplicate"] += 1
                sqs.send_message(QueueUrl=spec.queue_url, MessageBody=record["body"])
        result = worker.handler(event, context)
        if rng.random() < faults.crash * len(event["Records"]):
            injected["crash"] += 1
            report()
            reports.close()
            reports.join_thread()  # the report must leave before the process does
            sys.stdout.flush()
            os._exit(CRASH_EXIT_CODE)  # before the event source deletes anything, as a dying container
        return result

    source = SqsEventSource(
        sqs,
        spec.queue_url,
        handler,
        f"{spec.function}-{name}",
        batch_size=spec.batch_size,
        timeout_seconds=spec.timeout_seconds,
        wait_seconds=1,
        on_receive=report,  # the drain tells messages held by a container from those waiting out a timeout
    )
    while not stop.is_set():
        if source.poll_once():
            report()
    report()


COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)


@dataclass(frozen=True)
class QueueCounts:
    """A queue's approximate counts: visible, delayed (sent with a delay) and in flight."""

    visible: int
    delayed: int
    in_flight: int

    @property
    def total(self) -> int:
        return self.visible + self.delayed + self.in_flight


@dataclass(frozen=True)
class InFlightWait:
    """A source's messages in flight that no running container holds, with nothing visible: the queue
    gives them back only when their visibility timeout runs out, by ``until`` (time.time())."""

    source: str
    count: int
    until: float
    visibility_timeout: int


class LocalEventSources:
    """Starts the containers of every worker in a deployment and waits for the queues to drain."""

    def __init__(
        self,
        deployment: LocalDeployment,
        aws_env: dict[str, str],
        log_dir: Path,
        faults: ContainerFaults | None = None,
    ) -> None:
        self.deployment = deployment
        self.aws_env = aws_env
        self.log_dir = log_dir
        self.faults = faults or ContainerFaults()
        self._context = process_context()
        self._stop = self._context.Event()
        self._reports: Any = self._context.Queue()
        self._processes: dict[str, tuple[WorkerSpec, Any]] = {}
        self.latest: dict[tuple[str, str], ContainerReport] = {}
        self.restarts = 0

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.deployment.workers:
            for slot in range(spec.max_concurrency):
                self._launch(spec, f"{slot}")

    def _launch(self, spec: WorkerSpec, name: str) -> None:
        log_path = self.log_dir / f"{spec.source}-{name.split('.')[0]}.log"
        process = self._context.Process(
            target=_container_main,
            args=(spec, name, self.aws_env, str(log_path), self._stop, self._reports, self.faults),
            name=f"{spec.function}-{name}",
            daemon=True,
        )
        process.start()
        self._processes[f"{spec.source}/{name}"] = (spec, process)

    def _respawn_crashed(self) -> None:
        """Lambda starts a new container where one died; an unexpected death is an error."""
        for key, (spec, process) in list(self._processes.items()):
            if process.is_alive() or process.exitcode is None:
                continue
            if process.exitcode != CRASH_EXIT_CODE:
                raise RuntimeError(f"container {process.name} exited with {process.exitcode}; see {self.log_dir}")
            del self._processes[key]
            self.restarts += 1
            self._launch(spec, f"{key.split('/')[1].split('.')[0]}.{self.restarts}")

    def _collect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report: ContainerReport = self._reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            self.latest[(report.source, report.container)] = report

    def in_queues(self, sqs: Any) -> dict[str, QueueCounts]:
        """Per source: the counts of its queue."""
        found = {}
        for source, url in self.deployment.queues.items():
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(COUNT_ATTRIBUTES))["Attributes"]
            found[source] = QueueCounts(*(int(attributes[name]) for name in COUNT_ATTRIBUTES))
        return found

    def in_flight_waits(self, counts: dict[str, QueueCounts]) -> dict[str, InFlightWait]:
        """Per source with nothing visible: its messages in flight that no running container holds.

        They were received at the latest when the source's containers last received anything, so
        the queue gives them back by then plus the visibility timeout.
        """
        running = {tuple(key.split("/", 1)) for key in self._processes}
        waits = {}
        for source, count in counts.items():
            reports = [report for (s, _), report in self.latest.items() if s == source]
            held = sum(r.stats.in_hand for r in reports if (r.source, r.container) in running)
            last_receive = max((r.stats.last_receive for r in reports), default=0.0)
            if count.visible or count.in_flight <= held or not last_receive:
                continue
            timeout = self.deployment.visibility_timeout[source]
            waits[source] = InFlightWait(source, count.in_flight - held, last_receive + timeout, timeout)
        return waits

    def wait_until_drained(
        self,
        sqs: Any,
        max_seconds: float,
        on_progress: Callable[[dict[str, QueueCounts], dict[str, InFlightWait]], None] | None = None,
        every: float = 1.0,
    ) -> bool:
        """Wait until every queue is empty twice in a row (nothing visible, delayed or in flight): the
        counts are approximate, a message turning visible while they are read can be missed once.

        ``on_progress`` gets the counts and the in-flight waits seen at two checks in a row (a
        container's report of a batch it just received can come after the counts that include it).
        """
        stop_at = time.monotonic() + max_seconds
        empty_checks = 0
        previous: dict[str, InFlightWait] = {}
        while time.monotonic() < stop_at:
            self._collect(timeout=every)
            self._respawn_crashed()
            counts = self.in_queues(sqs)
            waits = self.in_flight_waits(counts)
            if on_progress is not None:
                on_progress(counts, {s: wait for s, wait in waits.items() if previous.get(s) == wait})
            previous = waits
            empty_checks = empty_checks + 1 if not any(c.total for c in counts.values()) else 0
            if empty_checks >= 2:
                return True
        return False

    def stop(self) -> None:
        self._stop.set()
        for _spec, process in self._processes.values():
            process.join(timeout=15)
        self._collect(timeout=0.5)
        for _spec, process in self._processes.values():
            if process.is_alive():
                process.terminate()

    def per_source(self) -> dict[str, dict[str, float]]:
        """Summed stats, metric totals and injected faults per source, over all its containers."""
        summary: dict[str, dict[str, float]] = {}
        for (source, _container), report in self.latest.items():
            row = summary.setdefault(source, {})
            for key, value in asdict(report.stats).items():
                if isinstance(value, int):
                    row[key] = row.get(key, 0) + value
            row["handler_errors"] = row.get("handler_errors", 0) + len(report.stats.handler_errors)
            for metric, value in report.totals.items():
                row[metric] = row.get(metric, 0) + value
            for kind, value in report.injected.items():
                row[f"injected_{kind}"] = row.get(f"injected_{kind}", 0) + value
        return summary
