"""The completeness check: is each source's latest scheduled run complete by the time it should be?

Run every few minutes (the template's ``CompletenessCheckMinutes``). For each source of the sources file it
finds the newest *scheduled* run that names the source and is *due*: planned (``manifest.created_at``) at
least ``schedule.complete_within_minutes`` ago, else the stack's ``RunCompleteWithinMinutes``. That run is
judged with the ledger (:meth:`Ledger.source_status`, the same verdict ``apilake status`` prints) and the
check emits, in the stack's namespace:

- per source (dimension ``source``): ``run_complete`` (1 or 0), ``pages_missing``, ``records_landed``;
- for the stack (no ``source`` dimension): ``sources_incomplete`` and ``sources_landed_nothing``, the counts
  the alarms watch (RunIncompleteAlarm, RunLandedNothingAlarm).

A source without a due scheduled run in the last :data:`LOOKBACK` emits nothing (a new source, or one run by
hand only). Manual runs and backfills are never judged: nobody promised when they would end. Each run judged
gets its report (re)written (:func:`apilake.report.write_report`), with the sources' DLQ depths.

What it reads, so that the cost does not grow with the history: one listing of the scheduled runs of the last
:data:`LOOKBACK` (run ids start with their scheduled time, so S3 lists only those), then manifests newest first
until every source has its run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from apilake.aws import cached_sources, default_clients
from apilake.config import SourcesFile
from apilake.exceptions import ApilakeError, ConfigError, describe_validation_error
from apilake.ledger import LEDGER_PREFIX, Ledger, RunManifest, ShardStatus, SourceStatus, manifest_key
from apilake.names import dlq_name
from apilake.observability import Metric, count, count_stack, logger
from apilake.planner import SCHEDULED_RUN_PREFIX, scheduled_run_id
from apilake.report import write_report
from apilake.settings import CompletenessSettings

# How far back the check looks for a source's latest scheduled run: beyond the longest complete_within_minutes
# (two days), and a week's schedule twice over.
LOOKBACK = timedelta(days=14)
_RUNS_PREFIX = f"{LEDGER_PREFIX}/runs/run="
_MANIFEST = "/manifest.json"


class CheckEvent(BaseModel):
    """What the check reads of its event: the scheduled ``time`` (EventBridge Scheduler's), the moment it judges
    as of, so that a retried invocation judges what the first one would have; absent (by hand), now."""

    model_config = ConfigDict(extra="ignore")

    time: AwareDatetime | None = None


def check_time(event: Any, now: datetime | None = None) -> datetime:
    """The moment the check judges as of: the event's ``time``, else ``now``."""
    if not isinstance(event, dict):
        raise ConfigError(f"completeness event: expected a JSON object, got {type(event).__name__}")
    try:
        parsed = CheckEvent.model_validate(event)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("completeness event", exc, whole="(event)")) from exc
    return (parsed.time or now or datetime.now(UTC)).astimezone(UTC)


class SourceVerdict(BaseModel):
    """A source's latest due scheduled run, as the ledger has it."""

    model_config = ConfigDict(extra="forbid")

    source: str
    run_id: str
    due_at: datetime
    complete: bool
    pages_landed: int
    pages_missing: int  # pages not landed (:func:`pages_missing`); a shard that has not ended misses at least 1
    records_landed: int
    landed_nothing: bool  # no record landed (a complete incremental run with nothing new is not counted)


class CompletenessSummary(BaseModel):
    """What one check found; the handler returns it (``sam local invoke`` and ``aws lambda invoke`` print it)."""

    model_config = ConfigDict(extra="forbid")

    checked_at: datetime
    sources: list[SourceVerdict]
    not_due: list[str]  # sources with no due scheduled run in the lookback: no metrics
    reports: list[str]  # the runs whose report was written
    sources_incomplete: int
    sources_landed_nothing: int

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def pages_missing(shard: ShardStatus) -> int:
    """The shard's pages not landed: those status finds missing (gaps), those that failed, and, in a shard that
    has not ended (a chain still going or stalled, a plan that failed), the page after the last one known,
    which has not landed either: such a shard misses at least one page."""
    pages = set(shard.missing) | set(shard.failures)
    if not shard.ended:
        # A chain's pages up to its last landed one are landed or missing, so the next is after both.
        pages.add(shard.landed_pages + len(shard.missing) + 1)
    return len(pages)


class CompletenessCheck:
    def __init__(
        self,
        ledger: Ledger,
        sources: SourcesFile,
        sqs_client: Any,
        stage: str,
        complete_within: timedelta,
    ) -> None:
        self.ledger = ledger
        self.sources = sources
        self._sqs = sqs_client
        self.stage = stage
        self.complete_within = complete_within

    @classmethod
    def for_settings(cls, settings: CompletenessSettings) -> CompletenessCheck:
        clients = default_clients(settings.aws_endpoint_url)
        return cls(
            ledger=Ledger(clients.s3, settings.lake_bucket),
            sources=cached_sources(settings.sources_file),
            sqs_client=clients.sqs,
            stage=settings.stage,
            complete_within=timedelta(minutes=settings.complete_within_minutes),
        )

    def due_within(self, source: str) -> timedelta:
        """How long after it was planned a scheduled run of ``source`` should be complete."""
        schedule = self.sources.get(source).schedule
        minutes = schedule.complete_within_minutes if schedule is not None else None
        return timedelta(minutes=minutes) if minutes is not None else self.complete_within

    def check(self, now: datetime) -> CompletenessSummary:
        """Judge each source's latest due scheduled run, emit the metrics, then write the runs' reports."""
        due = self.due_runs(now)
        verdicts = [
            self._verdict(manifest, self.ledger.source_status(manifest, source))
            for manifest, names in due
            for source in names
        ]
        for verdict in verdicts:
            count(verdict.source, Metric.RUN_COMPLETE, int(verdict.complete))
            count(verdict.source, Metric.PAGES_MISSING, verdict.pages_missing)
            count(verdict.source, Metric.RECORDS_LANDED, verdict.records_landed)
        summary = CompletenessSummary(
            checked_at=now,
            sources=sorted(verdicts, key=lambda verdict: verdict.source),
            not_due=sorted(set(self.sources.by_name) - {verdict.source for verdict in verdicts}),
            reports=[manifest.run_id for manifest, _ in due],
            sources_incomplete=sum(not verdict.complete for verdict in verdicts),
            sources_landed_nothing=sum(verdict.landed_nothing for verdict in verdicts),
        )
        count_stack(Metric.SOURCES_INCOMPLETE, summary.sources_incomplete)
        count_stack(Metric.SOURCES_LANDED_NOTHING, summary.sources_landed_nothing)
        for verdict in verdicts:
            log = logger.info if verdict.complete and not verdict.landed_nothing else logger.warning
            log("run judged", extra=verdict.model_dump(mode="json"))
        for manifest, _ in due:
            write_report(self.ledger, manifest, self.dlq_depths(list(manifest.sources)), now)
        return summary

    def due_runs(self, now: datetime) -> list[tuple[RunManifest, list[str]]]:
        """Each run to judge, newest first, with the sources it is the latest due scheduled run of."""
        unresolved = set(self.sources.by_name)
        found: list[tuple[RunManifest, list[str]]] = []
        for manifest in self._scheduled_manifests(now):
            created = _utc(manifest.created_at)
            names = [name for name in manifest.sources if name in unresolved and created + self.due_within(name) <= now]
            if names:
                found.append((manifest, names))
                unresolved -= set(names)
            if not unresolved:
                break
        return found

    def _scheduled_manifests(self, now: datetime) -> Iterator[RunManifest]:
        """The manifests of the scheduled runs of the lookback, newest first, read one at a time as asked for."""
        for run_id in self._recent_scheduled_run_ids(now - LOOKBACK):
            try:
                manifest = self.ledger.read_manifest(run_id)
            except ValidationError as exc:
                where = f"s3://{self.ledger.bucket}/{manifest_key(run_id)}"
                raise ApilakeError(describe_validation_error(where, exc, whole="(manifest)")) from exc
            if manifest is not None and manifest.trigger == "schedule" and _utc(manifest.created_at) <= now:
                yield manifest

    def _recent_scheduled_run_ids(self, since: datetime) -> list[str]:
        """Scheduled run ids (``sched-<time>...``) after ``since``, newest first: S3 lists keys in order, so
        starting after ``since``'s id lists only those (manual runs are named otherwise, and skipped too)."""
        paginator = self.ledger.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.ledger.bucket,
            Prefix=_RUNS_PREFIX + SCHEDULED_RUN_PREFIX,
            StartAfter=_RUNS_PREFIX + scheduled_run_id(since),
        )
        keys = (obj["Key"] for page in pages for obj in page.get("Contents", []))
        return sorted(
            (key[len(_RUNS_PREFIX) : -len(_MANIFEST)] for key in keys if key.endswith(_MANIFEST)), reverse=True
        )

    def _verdict(self, manifest: RunManifest, status: SourceStatus) -> SourceVerdict:
        source = status.source
        records = sum(
            int(page.get("records", 0))
            for shard in status.shards
            for page in self.ledger.landed_details(source, manifest.run_id, shard.shard).values()
        )
        incremental = self.sources.get(source).incremental is not None
        return SourceVerdict(
            source=source,
            run_id=manifest.run_id,
            due_at=_utc(manifest.created_at) + self.due_within(source),
            complete=status.complete,
            pages_landed=sum(shard.landed_pages for shard in status.shards),
            pages_missing=sum(pages_missing(shard) for shard in status.shards),
            records_landed=records,
            landed_nothing=records == 0 and not (incremental and status.complete),
        )

    def dlq_depths(self, sources: list[str]) -> dict[str, int]:
        """Messages waiting in each source's dead-letter queue (approximate, as SQS counts); a source whose DLQ
        is not found is left out (the report shows its depth as unknown)."""
        depths: dict[str, int] = {}
        for source in sources:
            name = dlq_name(self.stage, source)
            try:
                url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except self._sqs.exceptions.QueueDoesNotExist:
                logger.warning("no dead-letter queue", extra={"source": source, "queue": name})
                continue
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            depths[source] = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
        return depths


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a time without a zone, as a manifest could hold, read as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
