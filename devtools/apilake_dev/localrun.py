"""The whole Option A flow on one machine, with the handlers that run in Lambda.

moto's server plays AWS (resources from template.yaml), the planner handler runs with the planner
event, container processes drain the queues through the worker handler, the raw zone is cataloged
in the emulator's Glue, and the lake is mirrored to a folder for DuckDB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apilake.config import load_sources
from apilake.exceptions import ApilakeError, ConfigError
from apilake.ledger import Ledger, RunStatus
from apilake.observability import Metric
from apilake_dev.catalog import catalog_source, ensure_database
from apilake_dev.containers import LocalEventSources, invoke_planner
from apilake_dev.lakefolder import mirror
from apilake_dev.local_aws import LocalAws, deploy, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

Printer = Callable[[str], None]


@dataclass
class SourceSummary:
    source: str
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0
    failed_deliveries: int = 0
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

    @property
    def ok(self) -> bool:
        clean = all(s.dlq == 0 for s in self.sources.values())
        return (
            self.drained and self.planner_error is None and clean and self.status is not None and self.status.complete
        )


def check_sources_match_template(sources_file: Path, template: dict[str, Any]) -> None:
    declared = sorted(
        r["Properties"]["Environment"]["Variables"]["APILAKE_SOURCE"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
        and "APILAKE_SOURCE" in r["Properties"].get("Environment", {}).get("Variables", {})
    )
    configured = sorted(s.name for s in load_sources(sources_file).sources)
    if declared != configured:
        raise ConfigError(
            f"{sources_file.name}: sources {configured} but template.yaml has workers for {declared}: "
            "run `make template` after changing the sources"
        )


def run_local(
    sources_file: Path,
    home: Path,
    event: dict[str, Any],
    secrets: dict[str, str] | None = None,
    visibility_timeout: int | None = None,
    max_seconds: float = 900,
    echo: Printer = print,
) -> LocalRunResult:
    started = time.monotonic()
    template = load_template(TEMPLATE)
    check_sources_match_template(sources_file, template)
    with LocalAws() as aws:
        echo(f"AWS emulated by moto at {aws.endpoint}")
        for name, value in (secrets or {}).items():
            aws.client("secretsmanager").create_secret(Name=name, SecretString=value)
        deployment = deploy(template, aws, sources_file, visibility_timeout=visibility_timeout)
        echo(
            f"created from template.yaml: bucket {deployment.bucket}, "
            + ", ".join(
                f"{w.source} (queue + DLQ after {deployment.max_receive_count[w.source]} receives, "
                f"batch {w.batch_size}, concurrency {w.max_concurrency})"
                for w in deployment.workers
            )
        )
        planned, planner_error = _plan(aws, deployment.planner_environment, event, home / "logs" / "planner.log", echo)
        containers = LocalEventSources(deployment, aws.env(), home / "logs")
        containers.start()
        sqs = aws.client("sqs")
        last_print = [0.0]

        def progress(waiting: dict[str, int]) -> None:
            now = time.monotonic()
            if now - last_print[0] < 2 and any(waiting.values()):
                return
            last_print[0] = now
            landed = containers.per_source()
            cells = [f"{s} {int(landed.get(s, {}).get('deleted', 0))} done/{n} queued" for s, n in waiting.items()]
            echo(f"  [{now - started:5.1f}s] " + " | ".join(cells))

        try:
            drained = containers.wait_until_drained(sqs, max_seconds=max_seconds, on_progress=progress)
        finally:
            containers.stop()
        summaries = _summaries(containers.per_source(), deployment.dlqs, sqs, home)
        s3, glue = aws.client("s3"), aws.client("glue")
        ensure_database(glue, deployment.database)
        catalog = {
            w.source: catalog_source(glue, s3, deployment.bucket, deployment.database, w.source)
            for w in deployment.workers
        }
        mirror(s3, deployment.bucket, home / "lake")
        ledger = Ledger(s3, deployment.bucket)
        manifest = ledger.read_manifest(planned) if planned else None
        status = ledger.status(manifest) if manifest else None
    return LocalRunResult(
        run_id=planned or "",
        drained=drained,
        wall_seconds=time.monotonic() - started,
        sources=summaries,
        status=status,
        planner_error=planner_error,
        catalog=catalog,
    )


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


def _run_id_of(event: dict[str, Any]) -> str | None:
    from apilake.planner import parse_planner_event

    try:
        return parse_planner_event(event).run_id
    except ApilakeError:
        return None


def _summaries(
    per_source: dict[str, dict[str, float]], dlqs: dict[str, str], sqs: Any, home: Path
) -> dict[str, SourceSummary]:
    (home / "dlq").mkdir(parents=True, exist_ok=True)
    result = {}
    for source, dlq_url in dlqs.items():
        row = per_source.get(source, {})
        messages = _drain_dlq(sqs, dlq_url)
        (home / "dlq" / f"{source}.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))
        result[source] = SourceSummary(
            source=source,
            pages=int(row.get(Metric.PAGES_INGESTED.value, 0) + row.get(Metric.PAGES_UNCHANGED.value, 0)),
            records=int(row.get(Metric.RECORDS_INGESTED.value, 0)),
            bytes=int(row.get(Metric.BYTES_WRITTEN.value, 0)),
            retries=int(row.get(Metric.RETRIES.value, 0)),
            throttled=int(row.get(Metric.THROTTLED.value, 0)),
            failed_deliveries=int(row.get("failed", 0)),
            dlq=len(messages),
        )
    return result


def _drain_dlq(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, AttributeNames=["All"]
        )
        batch = messages.get("Messages", [])
        if not batch:
            return list(found.values())
        for message in batch:
            found[message["MessageId"]] = {
                "message_id": message["MessageId"],
                "body": message["Body"],
                "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
            }
