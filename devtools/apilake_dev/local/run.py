"""The whole scheduled flow (planner -> queues -> workers -> lake) on one machine, with the handlers that run in Lambda.

moto's server plays AWS (resources from template.yaml), the planner handler runs with the planner
event, container processes drain the queues through the worker handler, the raw zone is cataloged
in the emulator's Glue, the run's report is written into the ledger, the lake is mirrored to a
folder for DuckDB, and the sources with ``columns`` are curated there (apilake_dev.curate).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from apilake.config import load_sources
from apilake.exceptions import ApilakeError
from apilake.ledger import Ledger, RunStatus
from apilake.observability import Metric
from apilake.report import report_keys, write_report
from apilake_cli.lakefolder import mirror
from apilake_cli.redrive import peek, redrive
from apilake_dev.curate import Curated, curate_lake
from apilake_dev.local.aws import LocalAws, deploy, load_template
from apilake_dev.local.catalog import catalog_source, ensure_database
from apilake_dev.local.containers import (
    ContainerFaults,
    InFlightWait,
    LocalEventSources,
    QueueCounts,
    invoke_planner,
)

Printer = Callable[[str], None]


@dataclass
class SourceSummary:
    source: str
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0
    dlq: int = 0


@dataclass
class LocalRunResult:
    run_id: str
    drained: bool
    wall_seconds: float
    sources: dict[str, SourceSummary]
    status: RunStatus | None
    planner_error: str | None = None
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: Path | None = None  # the run's report.html in the lake folder
    curated: list[Curated] = field(default_factory=list)  # the (source, date) partitions written in the lake folder
    curation_error: str | None = None

    @property
    def ok(self) -> bool:
        clean = all(s.dlq == 0 for s in self.sources.values())
        return (
            self.drained
            and self.planner_error is None
            and self.curation_error is None
            and clean
            and self.status is not None
            and self.status.complete
        )


class LocalRun:
    """One local session: the emulator, the deployment from template.yaml, then planner runs and
    drains as the caller asks; ``finish`` catalogs, mirrors the lake and reads the ledger."""

    def __init__(
        self,
        sources_file: Path,
        home: Path,
        secrets: dict[str, str] | None = None,
        visibility_timeout: int | None = None,
        faults: ContainerFaults | None = None,
        echo: Printer = print,
        worker_timeout: float | None = None,
        template: dict[str, Any] | None = None,
    ) -> None:
        """``template``: the deployment to emulate (default: template.yaml with the region for ``sources_file``)."""
        self.worker_timeout = worker_timeout
        self.sources_file = sources_file
        self.home = home
        self.secrets = secrets or {}
        self.visibility_timeout = visibility_timeout
        self.faults = faults
        self.echo = echo
        self.started = time.monotonic()
        self.template = template or load_template(sources_file)
        self.aws = LocalAws()
        self.per_source: dict[str, dict[str, float]] = {}
        self.restarts = 0

    def __enter__(self) -> LocalRun:
        self.aws.__enter__()
        self.echo(f"AWS emulated by moto at {self.aws.endpoint}")
        for name, value in self.secrets.items():
            self.aws.client("secretsmanager").create_secret(Name=name, SecretString=value)
        self.deployment = deploy(self.template, self.aws, self.sources_file, visibility_timeout=self.visibility_timeout)
        self.sqs, self.s3 = self.aws.client("sqs"), self.aws.client("s3")
        self.echo(
            f"created from template.yaml: bucket {self.deployment.bucket}, "
            + ", ".join(
                f"{w.source} (queue + DLQ after {self.deployment.max_receive_count[w.source]} receives, "
                f"batch {w.batch_size}, concurrency {w.max_concurrency})"
                for w in self.deployment.workers
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.aws.__exit__(*exc)

    def plan(self, event: dict[str, Any]) -> tuple[str | None, str | None]:
        return _plan(
            self.aws, self.deployment.planner_environment, event, self.home / "logs" / "planner.log", self.echo
        )

    def drain(self, max_seconds: float = 900, check_every: float = 1.0) -> bool:
        """Run the worker containers until every queue is empty (or ``max_seconds`` pass); the
        queues are looked at every ``check_every`` seconds."""
        containers = LocalEventSources(self.deployment, self.aws.env(), self.home / "logs", self.faults)
        containers.start()
        last_print = [0.0]
        told: dict[str, InFlightWait] = {}
        cells: list[str] = []

        def progress(counts: dict[str, QueueCounts], waits: dict[str, InFlightWait]) -> None:
            now = time.monotonic()
            for wait in waits.values():
                if told.get(wait.source) != wait:
                    self.echo(f"  [{now - self.started:5.1f}s] {describe_wait(wait)}")
            told.clear()
            told.update(waits)
            landed = containers.per_source()
            cells[:] = [
                f"{s} {int(landed.get(s, {}).get('deleted', 0))} done/{c.total} queued"
                + (f" ({c.delayed} delayed)" if c.delayed else "")
                + (f" ({waits[s].count} in flight until {_clock(waits[s].until)})" if s in waits else "")
                for s, c in counts.items()
            ]
            if now - last_print[0] < 2 and any(c.total for c in counts.values()):
                return
            last_print[0] = now
            self.echo(f"  [{now - self.started:5.1f}s] " + " | ".join(cells))

        try:
            drained = containers.wait_until_drained(
                self.sqs, max_seconds=max_seconds, on_progress=progress, every=check_every
            )
        finally:
            containers.stop()
        if not drained:
            self.echo(f"  not drained after {max_seconds:g} s: " + " | ".join(cells))
        for source, row in containers.per_source().items():
            totals = self.per_source.setdefault(source, {})
            for key, value in row.items():
                totals[key] = totals.get(key, 0) + value
        self.restarts += containers.restarts
        return drained

    def dlq_messages(self, source: str) -> list[dict[str, Any]]:
        return peek(self.sqs, self.deployment.dlqs[source], wait_seconds=0)  # moto answers at once

    def redrive(self, source: str) -> int:
        return redrive(self.sqs, self.deployment.dlqs[source], self.deployment.queues[source])

    def finish(self, run_id: str | None, drained: bool, planner_error: str | None = None) -> LocalRunResult:
        """Catalog the raw zone, write the run's report (DLQ depths from the local queues), mirror the lake,
        curate it (the run's date, and every other date whose curated file is missing or stale)."""
        summaries = _summaries(self.per_source, {s: self.dlq_messages(s) for s in self.deployment.dlqs}, self.home)
        glue = self.aws.client("glue")
        ensure_database(glue, self.deployment.database)
        catalog = {
            w.source: catalog_source(glue, self.s3, self.deployment.bucket, self.deployment.database, w.source)
            for w in self.deployment.workers
        }
        ledger = Ledger(self.s3, self.deployment.bucket)
        manifest = ledger.read_manifest(run_id) if run_id else None
        report = None
        if manifest is not None:
            depths = {source: summary.dlq for source, summary in summaries.items()}
            write_report(ledger, manifest, depths, datetime.now(UTC), load_sources(self.sources_file))
            report = self.home / "lake" / report_keys(manifest.run_id)[1]
        mirror(self.s3, self.deployment.bucket, self.home / "lake")
        if report is not None:
            self.echo(f"run report: {report}")
        written, curation_error = self.curate(manifest.ingestion_date if manifest else None)
        return LocalRunResult(
            run_id=run_id or "",
            drained=drained,
            wall_seconds=time.monotonic() - self.started,
            sources=summaries,
            status=ledger.status(manifest) if manifest else None,
            planner_error=planner_error,
            catalog=catalog,
            report=report,
            curated=written,
            curation_error=curation_error,
        )

    def curate(self, ingestion_date: date | None) -> tuple[list[Curated], str | None]:
        """The curated zone in the lake folder, by DuckDB: what was written, or why it failed."""
        import duckdb

        try:
            written = curate_lake(
                self.home / "lake",
                load_sources(self.sources_file).sources,
                dates=[ingestion_date] if ingestion_date else None,
            )
        except duckdb.Error as exc:
            self.echo(f"curation failed: {exc}")
            return [], str(exc)
        if written:
            self.echo(
                "curated (Parquet in the lake folder): "
                + ", ".join(f"{c.source} {c.ingestion_date} {c.rows} rows" for c in written)
            )
        return written, None


def run_local(
    sources_file: Path,
    home: Path,
    event: dict[str, Any],
    secrets: dict[str, str] | None = None,
    visibility_timeout: int | None = None,
    max_seconds: float = 900,
    echo: Printer = print,
) -> LocalRunResult:
    """Plan once, drain, finish: what `apilake demo` and `apilake run --local` do."""
    with LocalRun(sources_file, home, secrets, visibility_timeout, echo=echo) as run:
        run_id, planner_error = run.plan(event)
        drained = run.drain(max_seconds)
        return run.finish(run_id, drained, planner_error)


def _plan(
    aws: LocalAws, environment: dict[str, str], event: dict[str, Any], log: Path, echo: Printer
) -> tuple[str | None, str | None]:
    """Invoke the planner handler in a container process (its JSON logs to ``log``); returns (run id, error)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    outcome, value = invoke_planner({**aws.env(), **environment}, event, log)
    if outcome == "error":
        echo(f"planner failed: {value}")
        return _run_id_of(event), str(value)
    echo(f"planner: run {value['run_id']}, messages " + json.dumps(value["messages"]))
    return str(value["run_id"]), None


def describe_wait(wait: InFlightWait) -> str:
    """What a drain waiting on messages in flight says: which source, how many, until when."""
    return (
        f"{wait.source}: waiting on {wait.count} message{'s' if wait.count != 1 else ''} in flight that no "
        f"container holds; the queue gives them back when their visibility timeout ({wait.visibility_timeout} s) "
        f"runs out, by {_clock(wait.until)}"
    )


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _run_id_of(event: dict[str, Any]) -> str | None:
    from apilake.planner import parse_planner_event

    try:
        return parse_planner_event(event).run_id
    except ApilakeError:
        return None


def _summaries(
    per_source: dict[str, dict[str, float]], dead: dict[str, list[dict[str, Any]]], home: Path
) -> dict[str, SourceSummary]:
    (home / "dlq").mkdir(parents=True, exist_ok=True)
    result = {}
    for source, messages in dead.items():
        row = per_source.get(source, {})
        dumped = [{"message_id": m["MessageId"], "body": m["Body"]} for m in messages]
        (home / "dlq" / f"{source}.jsonl").write_text("".join(json.dumps(m) + "\n" for m in dumped))
        result[source] = SourceSummary(
            source=source,
            pages=int(row.get(Metric.PAGES_INGESTED.value, 0) + row.get(Metric.PAGES_UNCHANGED.value, 0)),
            records=int(row.get(Metric.RECORDS_INGESTED.value, 0)),
            bytes=int(row.get(Metric.BYTES_WRITTEN.value, 0)),
            retries=int(row.get(Metric.RETRIES.value, 0)),
            throttled=int(row.get(Metric.THROTTLED.value, 0)),
            dlq=len(messages),
        )
    return result
