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

from apilake_dev.event_source import PollStats, SqsEventSource
from apilake_dev.local_aws import LocalDeployment, WorkerSpec

ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = ROOT / "functions" / "worker" / "app.py"
PLANNER_APP = ROOT / "functions" / "planner" / "app.py"
# Third-party libraries a container imports, loaded once in the fork server so that containers start
# in milliseconds. apilake's own modules are not: each container imports them after its environment
# is set, as a Lambda cold start does.
PRELOAD = [
    "boto3",
    "botocore.httpsession",
    "pydantic",
    "requests.adapters",
    "tenacity",
    "yaml",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.parser.models",
    "aws_lambda_powertools.utilities.parameters",
]


def process_context() -> Any:
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _enter_container(env: dict[str, str], log_path: str) -> None:
    """Send this process's output to its log file and set its environment, before apilake is imported."""
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
    from apilake_dev.event_source import LambdaContextStub

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


@dataclass
class ContainerReport:
    source: str
    slot: int
    stats: PollStats
    totals: dict[str, float] = field(default_factory=dict)  # metric -> sum, for this source
    final: bool = False


def _container_main(spec: WorkerSpec, slot: int, env: dict[str, str], log_path: str, stop: Event, reports: Any) -> None:
    """The body of one container process: its own interpreter state, environment and caches."""
    _enter_container({**env, **spec.environment}, log_path)
    import boto3

    from apilake.observability import totals

    worker = _load_app(WORKER_APP, "worker_app")

    source = SqsEventSource(
        boto3.client("sqs"),
        spec.queue_url,
        worker.handler,
        f"{spec.function}-{slot}",
        batch_size=spec.batch_size,
        timeout_seconds=spec.timeout_seconds,
        wait_seconds=1,
    )

    def report(final: bool) -> None:
        sums = {metric: value for (src, metric), value in totals.snapshot().items() if src == spec.source}
        reports.put(ContainerReport(spec.source, slot, source.stats, sums, final))

    while not stop.is_set():
        if source.poll_once():
            report(final=False)
    report(final=True)


class LocalEventSources:
    """Starts the containers of every worker in a deployment and waits for the queues to drain."""

    def __init__(self, deployment: LocalDeployment, aws_env: dict[str, str], log_dir: Path) -> None:
        self.deployment = deployment
        self.aws_env = aws_env
        self.log_dir = log_dir
        self._context = process_context()
        self._stop = self._context.Event()
        self._reports: Any = self._context.Queue()
        self._processes: list[Any] = []
        self.latest: dict[tuple[str, int], ContainerReport] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.deployment.workers:
            for slot in range(spec.max_concurrency):
                log_path = self.log_dir / f"{spec.source}-{slot}.log"
                process = self._context.Process(
                    target=_container_main,
                    args=(spec, slot, self.aws_env, str(log_path), self._stop, self._reports),
                    name=f"{spec.function}-{slot}",
                    daemon=True,
                )
                process.start()
                self._processes.append(process)

    def _collect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report: ContainerReport = self._reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            self.latest[(report.source, report.slot)] = report

    def in_queues(self, sqs: Any) -> dict[str, int]:
        """Per source: messages visible or in flight in its queue."""
        found = {}
        for source, url in self.deployment.queues.items():
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            found[source] = int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            )
        return found

    def wait_until_drained(
        self,
        sqs: Any,
        max_seconds: float,
        on_progress: Callable[[dict[str, int]], None] | None = None,
        every: float = 1.0,
    ) -> bool:
        """Wait until every queue is empty twice in a row (nothing visible, nothing in flight)."""
        stop_at = time.monotonic() + max_seconds
        empty_checks = 0
        while time.monotonic() < stop_at:
            self._collect(timeout=every)
            waiting = self.in_queues(sqs)
            if on_progress is not None:
                on_progress(waiting)
            empty_checks = empty_checks + 1 if not any(waiting.values()) else 0
            if empty_checks >= 2:
                return True
            dead = [p.name for p in self._processes if not p.is_alive()]
            if dead:
                raise RuntimeError(f"container process(es) died: {', '.join(dead)}; see {self.log_dir}")
        return False

    def stop(self) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout=15)
        self._collect(timeout=0.5)
        for process in self._processes:
            if process.is_alive():
                process.terminate()

    def per_source(self) -> dict[str, dict[str, float]]:
        """Summed stats and metric totals per source, over its containers."""
        summary: dict[str, dict[str, float]] = {}
        for (source, _slot), report in self.latest.items():
            row = summary.setdefault(source, {})
            for key, value in asdict(report.stats).items():
                if isinstance(value, int):
                    row[key] = row.get(key, 0) + value
            row["handler_errors"] = row.get("handler_errors", 0) + len(report.stats.handler_errors)
            for metric, value in report.totals.items():
                row[metric] = row.get(metric, 0) + value
        return summary
