"""The completeness check: is each source's latest scheduled run complete by the time it should be?

Run every few minutes (the template's ``CompletenessCheckMinutes``). For each source of the sources file it
finds the newest *scheduled* run that names the source and is *due*: planned (``manifest.created_at``) at
least ``schedule.complete_within_minutes`` ago, else the stack's ``RunCompleteWithinMinutes``. That run is
judged on its run report (:func:`apilake.report.build_report`: the ledger's status, the verdict ``apilake
status`` prints, and its pages missing, :attr:`ShardStatus.missing_pages`) and the check emits, in the stack's
namespace:

- per source (dimension ``source``): ``run_complete`` (1 or 0), ``pages_missing``, ``records_landed``, and for a
  source with ``columns`` whose fields the worker noted, ``schema_drift_fields`` (new, missing and changed fields,
  :mod:`apilake.drift`, judged against the columns as they are now: accepted drift no longer counts);
- for the stack (no ``source`` dimension): ``sources_incomplete`` and ``sources_landed_nothing``, the counts
  the alarms watch (RunIncompleteAlarm, RunLandedNothingAlarm).

A source without a due scheduled run in the last :data:`LOOKBACK` emits nothing (a new source, or one run by
hand only). Manual runs and backfills are never judged: nobody promised when they would end.

The check also keeps the run reports current (:mod:`apilake.report`, with the sources' DLQ depths): of each run
judged, and of every run (any trigger) whose manifest was written in the :data:`RECENT` before the check, the
newest :data:`RECENT_REPORTS` of them at most. The verdict is read off the judged run's report (one reading of
the ledger per run); a report is put only when a figure changed (S3 keeps a version of each PUT); and a run
whose stored report says complete is not read again: its report is final (only a later DLQ depth would differ,
and the DLQ is the source's, not the run's).

Last, the curated step (:mod:`apilake.curation`, when the stack's workgroup and Glue database are set): each run
of the :data:`RECENT` whose report it holds, complete for a source with ``columns``, has its ingestion date
rewritten as the source's curated Parquet by Athena, once; and the source's views are created after its first
curation and again when their DDL changes.

What it reads, so that the cost does not grow with the runs' pages: one listing of ``ledger/runs/`` (run ids,
whether a report is stored, the manifests' LastModified), the manifests of the scheduled runs of the lookback
newest first until every source has its run, each recent run's manifest and stored report.json, and the
ledger of the runs whose reports are not final.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from apilake.aws import cached_sources, default_athena_client, default_clients
from apilake.config import SourcesFile
from apilake.curated import create_runs_view
from apilake.curation import Curation, CurationSummary, CurationTask
from apilake.drift import rejudge
from apilake.exceptions import ApilakeError, ConfigError, describe_validation_error
from apilake.ledger import LEDGER_PREFIX, Ledger, RunManifest, manifest_key
from apilake.names import dlq_name
from apilake.observability import Metric, count, count_stack, logger
from apilake.planner import SCHEDULED_RUN_PREFIX, scheduled_run_id
from apilake.report import DLQ_DEPTH_ATTRIBUTES, RunReport, SourceReport, build_report, dlq_depth, store_report
from apilake.report import stored_report as read_stored_report
from apilake.settings import CompletenessSettings

# How far back the check looks for a source's latest scheduled run: beyond the longest complete_within_minutes
# (two days), and a week's schedule twice over.
LOOKBACK = timedelta(days=14)
# The runs whose reports the check keeps current besides the judged ones: those planned this long before it
# (manual runs and backfills included), the newest so many of them.
RECENT = timedelta(hours=48)
RECENT_REPORTS = 50
_RUNS_PREFIX = f"{LEDGER_PREFIX}/runs/"


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
    pages_missing: int  # ShardStatus.missing_pages, as the report counts them: a shard not ended misses at least 1
    records_landed: int
    landed_nothing: bool  # no record landed (a complete incremental run with nothing new is not counted)
    schema_drift_fields: int | None = None  # None: a source without columns, or whose fields were not noted


class CompletenessSummary(BaseModel):
    """What one check found; the handler returns it (``sam local invoke`` and ``aws lambda invoke`` print it)."""

    model_config = ConfigDict(extra="forbid")

    checked_at: datetime
    sources: list[SourceVerdict]
    not_due: list[str]  # sources with no due scheduled run in the lookback: no metrics
    reports: list[str]  # the runs whose report was written
    reports_current: list[str]  # the runs whose stored report was current already, or final (a complete run's)
    sources_incomplete: int
    sources_landed_nothing: int
    # The curated step (apilake.curation) of the recent runs complete for a source with columns; None: not set up.
    curation: CurationSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class LedgerRun:
    """A run in the listing of ``ledger/runs/``."""

    run_id: str
    planned: datetime  # the manifest's LastModified: when the planner (last) wrote it
    reported: bool  # a report.json is stored


class CompletenessCheck:
    def __init__(
        self,
        ledger: Ledger,
        sources: SourcesFile,
        sqs_client: Any,
        stage: str,
        complete_within: timedelta,
        curation: Curation | None = None,
    ) -> None:
        self.ledger = ledger
        self.sources = sources
        self._sqs = sqs_client
        self.stage = stage
        self.complete_within = complete_within
        self.curation = curation
        self._depths: dict[str, int | None] = {}
        self._held: list[tuple[LedgerRun, RunManifest, RunReport]] = []  # the runs whose report this check holds

    @classmethod
    def for_settings(cls, settings: CompletenessSettings) -> CompletenessCheck:
        clients = default_clients(settings.aws_endpoint_url)
        curation = None
        sources = cached_sources(settings.sources_file)
        if not (settings.athena_workgroup and settings.glue_database):
            if any(source.columns for source in sources.sources):
                logger.warning("no curated step: APILAKE_ATHENA_WORKGROUP or APILAKE_GLUE_DATABASE is not set")
        else:
            curation = Curation(
                clients.s3,
                settings.lake_bucket,
                default_athena_client(settings.aws_endpoint_url),
                settings.athena_workgroup,
                settings.glue_database,
                stack_views=[create_runs_view()],
            )
        return cls(
            ledger=Ledger(clients.s3, settings.lake_bucket),
            sources=sources,
            sqs_client=clients.sqs,
            stage=settings.stage,
            complete_within=timedelta(minutes=settings.complete_within_minutes),
            curation=curation,
        )

    def due_within(self, source: str) -> timedelta:
        """How long after it was planned a scheduled run of ``source`` should be complete (a child source: as its
        topmost parent, whose schedule plans it)."""
        declared = self.sources.get(source)
        for _ in self.sources.sources:  # parents have no cycle (parent_config.check_parents): at most one a source
            if declared.parent is None:
                break
            declared = self.sources.get(declared.parent.source)
        schedule = declared.schedule
        minutes = schedule.complete_within_minutes if schedule is not None else None
        return timedelta(minutes=minutes) if minutes is not None else self.complete_within

    def check(self, now: datetime) -> CompletenessSummary:
        """Judge each source's latest due scheduled run and emit the metrics, then keep the reports current: the
        judged runs' and the recent runs'."""
        self._depths = {}  # the DLQ depths, read once per check and source
        runs = self.ledger_runs()
        due = self.due_runs(now, runs)
        # Each judged run's report: built from the ledger once, the verdicts read off it (or off the stored one,
        # when final); written after the metrics, which the alarms wait for.
        judged = [(manifest, names, self._report(manifest, runs[manifest.run_id], now)) for manifest, names in due]
        self._held = [(runs[manifest.run_id], manifest, report) for manifest, _, (report, _) in judged]
        verdicts = [self._verdict(report, source) for _, names, (report, _) in judged for source in names]
        for verdict in verdicts:
            count(verdict.source, Metric.RUN_COMPLETE, int(verdict.complete))
            count(verdict.source, Metric.PAGES_MISSING, verdict.pages_missing)
            count(verdict.source, Metric.RECORDS_LANDED, verdict.records_landed)
            if verdict.schema_drift_fields is not None:
                count(verdict.source, Metric.SCHEMA_DRIFT_FIELDS, verdict.schema_drift_fields)
        incomplete = sum(not verdict.complete for verdict in verdicts)
        landed_nothing = sum(verdict.landed_nothing for verdict in verdicts)
        count_stack(Metric.SOURCES_INCOMPLETE, incomplete)
        count_stack(Metric.SOURCES_LANDED_NOTHING, landed_nothing)
        for verdict in verdicts:
            log = logger.info if verdict.complete and not verdict.landed_nothing else logger.warning
            log("run judged", extra=verdict.model_dump(mode="json"))
        written: list[str] = []
        current: list[str] = []
        for manifest, _, (report, stored) in judged:
            (written if self._store(report, stored) else current).append(manifest.run_id)
        broken = self._recent_reports(now, runs, {manifest.run_id for manifest, _ in due}, written, current)
        curation = self.curation.advance(self.curation_tasks(now), now) if self.curation is not None else None
        if broken:  # after the curated step: a manifest that does not parse stops neither it nor the other reports
            raise ApilakeError("reports not written: " + "; ".join(broken))
        return CompletenessSummary(
            checked_at=now,
            sources=sorted(verdicts, key=lambda verdict: verdict.source),
            not_due=sorted(set(self.sources.by_name) - {verdict.source for verdict in verdicts}),
            reports=written,
            reports_current=current,
            sources_incomplete=incomplete,
            sources_landed_nothing=landed_nothing,
            curation=curation,
        )

    def curation_tasks(self, now: datetime) -> list[CurationTask]:
        """The curated step's work: each run of the :data:`RECENT` whose report (as this check holds it) says
        complete for a source with columns, with the run's ingestion date (every page of a run lands under it)."""
        tasks: list[CurationTask] = []
        for run, manifest, report in self._held:
            if not now - RECENT <= run.planned <= now:
                continue
            for source in report.sources:
                declared = self.sources.by_name.get(source.source)
                if source.complete and declared is not None and declared.columns:
                    tasks.append(CurationTask(declared, run.run_id, manifest.ingestion_date, run.planned))
        return tasks

    # -- the runs ------------------------------------------------------------------------------------------
    def ledger_runs(self) -> dict[str, LedgerRun]:
        """The runs that have a manifest, from one listing of ``ledger/runs/`` (three keys a run: a LIST request
        per some 330 runs)."""
        planned: dict[str, datetime] = {}
        reported: set[str] = set()
        paginator = self.ledger.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.ledger.bucket, Prefix=_RUNS_PREFIX + "run="):
            for obj in page.get("Contents", []):
                run_id, _, name = obj["Key"][len(_RUNS_PREFIX) + len("run=") :].partition("/")
                if name == "manifest.json":
                    planned[run_id] = obj["LastModified"]
                elif name == "report.json":
                    reported.add(run_id)
        return {run_id: LedgerRun(run_id, _utc(at), run_id in reported) for run_id, at in planned.items()}

    def due_runs(self, now: datetime, runs: dict[str, LedgerRun]) -> list[tuple[RunManifest, list[str]]]:
        """Each run to judge, newest first, with the sources it is the latest due scheduled run of."""
        unresolved = set(self.sources.by_name)
        found: list[tuple[RunManifest, list[str]]] = []
        for manifest in self._scheduled_manifests(now, runs):
            created = _utc(manifest.created_at)
            names = [name for name in manifest.sources if name in unresolved and created + self.due_within(name) <= now]
            if names:
                found.append((manifest, names))
                unresolved -= set(names)
            if not unresolved:
                break
        return found

    def _scheduled_manifests(self, now: datetime, runs: dict[str, LedgerRun]) -> Iterator[RunManifest]:
        """The manifests of the scheduled runs of the lookback, newest first, read one at a time as asked for. Run
        ids (``sched-<time>...``) sort by their scheduled time: those of the lookback are found without a read."""
        since = scheduled_run_id(now - LOOKBACK)
        recent = (run_id for run_id in runs if run_id.startswith(SCHEDULED_RUN_PREFIX) and run_id > since)
        for run_id in sorted(recent, reverse=True):
            manifest = self._manifest(run_id)
            if manifest is not None and manifest.trigger == "schedule" and _utc(manifest.created_at) <= now:
                yield manifest

    def _manifest(self, run_id: str) -> RunManifest | None:
        try:
            return self.ledger.read_manifest(run_id)
        except ValidationError as exc:
            where = f"s3://{self.ledger.bucket}/{manifest_key(run_id)}"
            raise ApilakeError(describe_validation_error(where, exc, whole="(manifest)")) from exc

    # -- the reports ---------------------------------------------------------------------------------------
    def _report(self, manifest: RunManifest, run: LedgerRun, now: datetime) -> tuple[RunReport, RunReport | None]:
        """The run's report and the stored one: the stored one itself when final (it says complete, of this very
        manifest: a planner's retry rewrites it)."""
        stored = read_stored_report(self.ledger, run.run_id) if run.reported else None
        if stored is not None and stored.complete and stored.created_at == manifest.created_at:
            return stored, stored
        return build_report(self.ledger, manifest, self.dlq_depths(list(manifest.sources)), now, self.sources), stored

    def _store(self, report: RunReport, stored: RunReport | None) -> bool:
        """Put ``report`` if a figure changed; a final stored report (:meth:`_report` returned it) stays as it is."""
        return report is not stored and store_report(self.ledger, report, stored)

    def _recent_reports(
        self, now: datetime, runs: dict[str, LedgerRun], judged: set[str], written: list[str], current: list[str]
    ) -> list[str]:
        """Keep current the reports of the runs planned in the :data:`RECENT` before ``now`` (not judged), newest
        first, :data:`RECENT_REPORTS` at most. A manifest that does not parse does not stop the others (logged
        and skipped): the errors naming each are returned, the check fails with them at its end."""
        recent = [run for run in runs.values() if now - RECENT <= run.planned <= now and run.run_id not in judged]
        recent.sort(key=lambda run: (run.planned, run.run_id), reverse=True)
        if len(recent) > RECENT_REPORTS:
            left = [run.run_id for run in recent[RECENT_REPORTS:]]
            logger.warning("recent runs left without a report update", extra={"runs": left})
        broken: list[str] = []
        for run in recent[:RECENT_REPORTS]:
            try:
                manifest = self._manifest(run.run_id)
            except ApilakeError as exc:
                logger.error("run manifest skipped", extra={"run_id": run.run_id, "error": str(exc)})
                broken.append(str(exc))
                continue
            if manifest is None:
                continue  # deleted since the listing
            report, stored = self._report(manifest, run, now)
            self._held.append((run, manifest, report))
            (written if self._store(report, stored) else current).append(run.run_id)
        return broken

    def _verdict(self, report: RunReport, name: str) -> SourceVerdict:
        (source,) = [source for source in report.sources if source.source == name]
        declared = self.sources.get(name)
        verdict = verdict_of(report, source, self.due_within(name), declared.incremental is not None)
        drift = rejudge(declared, source.drift)
        if drift is not None and drift.judged:
            verdict.schema_drift_fields = drift.fields
        return verdict

    def dlq_depths(self, sources: Sequence[str]) -> dict[str, int]:
        """Messages in each source's dead-letter queue (approximate, as SQS counts: :func:`apilake.report.dlq_depth`),
        each read once a check; a source whose DLQ is not found is left out (the report shows its depth as
        unknown)."""
        for source in sources:
            if source not in self._depths:
                self._depths[source] = self._dlq_depth(source)
        return {source: depth for source in sources if (depth := self._depths[source]) is not None}

    def _dlq_depth(self, source: str) -> int | None:
        name = dlq_name(self.stage, source)
        try:
            url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except self._sqs.exceptions.QueueDoesNotExist:
            logger.warning("no dead-letter queue", extra={"source": source, "queue": name})
            return None
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(DLQ_DEPTH_ATTRIBUTES))
        return dlq_depth(attributes["Attributes"])


def verdict_of(report: RunReport, source: SourceReport, due_within: timedelta, incremental: bool) -> SourceVerdict:
    """What the check says of ``source`` in ``report``'s run: the report's own figures."""
    return SourceVerdict(
        source=source.source,
        run_id=report.run_id,
        due_at=_utc(report.created_at) + due_within,
        complete=source.complete,
        pages_landed=source.pages_landed,
        pages_missing=source.pages_missing,
        records_landed=source.records,
        landed_nothing=source.records == 0 and not (incremental and source.complete),
    )


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a time without a zone, as a manifest could hold, read as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
