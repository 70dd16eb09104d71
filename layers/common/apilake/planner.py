"""The planner: enumerates source x date shard, learns page counts, fans work out to the queues."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from apilake.auth import scrub_error
from apilake.aws import cached_sources, default_clients, default_queue_locator, default_vendor_clients
from apilake.config import DailySharding, Source, SourceName, SourcesFile
from apilake.exceptions import ApilakeError, ConfigError, PlanningError, describe_validation_error
from apilake.http import Deadline, VendorClient
from apilake.incremental import minus_overlap, parse_value, to_json, window_shard
from apilake.ledger import ChildOf, IncrementalWindow, Ledger, RunManifest, ShardPlan, SourcePlan
from apilake.marks import MarkLostRaceError, MarkStore
from apilake.messages import RunId, WorkItem
from apilake.observability import Metric, count, logger
from apilake.pagination import paginator_for
from apilake.parent_config import descendants_of
from apilake.queue import QueueLocator, QueueSender
from apilake.settings import PlannerSettings

MAX_BACKFILL_DAYS = 366
# Names one of the sources' own schedules in template.yaml (``make template``), and the runs it starts.
ScheduleKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-z]{1,16}$")]


class ScheduleDetail(BaseModel):
    """The event's ``detail``: empty from the stack's default schedule (it plans the sources without a
    ``schedule`` of their own); from a source schedule, that schedule's key and the sources it plans."""

    model_config = ConfigDict(extra="forbid")

    schedule: ScheduleKey | None = None
    sources: list[SourceName] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _together(self) -> ScheduleDetail:
        if (self.schedule is None) != (self.sources is None):
            raise ValueError("give both schedule and sources, or neither (the default schedule)")
        return self


class ScheduledEvent(BaseModel):
    """An EventBridge (Scheduler) event: the scheduled time (and the schedule's key) fix the run id and
    the ingestion date, so a retried invocation plans the same run again."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    source: Literal["aws.events", "aws.scheduler"]
    time: datetime
    detail: ScheduleDetail = ScheduleDetail()


class ManualRun(BaseModel):
    """A run started by hand: a subset of sources, a backfill window of shards, a fixed date or run id."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] | None = Field(default=None, min_length=1)
    shard_from: date | None = None
    shard_to: date | None = None
    ingestion_date: date | None = None
    run_id: RunId | None = None
    # Incremental sources: an explicit window instead of the mark (the mark does not move for it).
    since: str | int | float | None = None
    until: str | int | float | None = None

    @model_validator(mode="after")
    def _window(self) -> ManualRun:
        if self.until is not None and self.since is None:
            raise ValueError("until needs since")
        if (self.shard_from is None) != (self.shard_to is None):
            raise ValueError("give both shard_from and shard_to, or neither")
        if self.shard_from and self.shard_to:
            if self.shard_to < self.shard_from:
                raise ValueError("shard_to is before shard_from")
            if (self.shard_to - self.shard_from).days >= MAX_BACKFILL_DAYS:
                raise ValueError(f"a backfill window is at most {MAX_BACKFILL_DAYS} days")
        return self


SCHEDULED_RUN_PREFIX = "sched-"


@dataclass(frozen=True)
class PlanRequest:
    run_id: str
    ingestion_date: date
    trigger: Literal["schedule", "manual"]
    sources: list[str] | None = None
    shard_window: tuple[date, date] | None = None
    # Incremental sources: (since, until or None) of a manual run's explicit window.
    incremental_window: tuple[str | int | float, str | int | float | None] | None = None

    def __post_init__(self) -> None:
        # The scheduled runs' ids are theirs: the completeness check judges them, a manual run would replace one.
        if self.trigger == "manual" and self.run_id.startswith(SCHEDULED_RUN_PREFIX):
            raise ConfigError(
                f"manual run {self.run_id}: its id cannot start with {SCHEDULED_RUN_PREFIX!r}, which names the "
                "scheduled runs: choose another run id"
            )

    def select(self, sources: SourcesFile) -> list[Source]:
        """The sources this run plans: those named; else, from the default schedule, those without a
        ``schedule`` of their own (the others have theirs); else (a manual run) all of them. Never a child
        source: its work comes from its parent's pages (:meth:`Planner.plan` adds it to the manifest)."""
        for name in self.sources or []:
            parent = sources.get(name).parent
            if parent is not None:
                raise ConfigError(
                    f"source '{name}' is a child of '{parent.source}': its work comes from the pages of "
                    f"'{parent.source}'; run '{parent.source}' (its children follow)"
                )
        if self.sources is None and self.trigger == "schedule":
            return [source for source in sources.sources if source.schedule is None and source.parent is None]
        return [source for source in sources.select(self.sources) if source.parent is None]


def scheduled_run_id(when: datetime, key: str | None = None) -> str:
    """A scheduled run's id: its scheduled time (UTC), then the key of the source schedule that started it (if
    not the default one). Ids sort by time, so the newest runs are found without reading every manifest."""
    return f"{SCHEDULED_RUN_PREFIX}{when.astimezone(UTC):%Y%m%dT%H%M%SZ}" + (f"-{key}" if key else "")


def parse_planner_event(event: Any, now: datetime | None = None) -> PlanRequest:
    """Turn the invocation payload into a plan request, with an error that says what is wrong."""
    now = now or datetime.now(UTC)
    if not isinstance(event, dict):
        raise ConfigError(f"planner event: expected a JSON object, got {type(event).__name__}")
    try:
        if event.get("source") in ("aws.events", "aws.scheduler"):
            scheduled = ScheduledEvent.model_validate(event)
            when = scheduled.time.astimezone(UTC)
            # Two schedules may fire at the same minute: each one's runs carry its key.
            return PlanRequest(
                run_id=scheduled_run_id(when, scheduled.detail.schedule),
                ingestion_date=when.date(),
                trigger="schedule",
                sources=scheduled.detail.sources,
            )
        manual = ManualRun.model_validate(event)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("planner event", exc, whole="(event)")) from exc
    window = (manual.shard_from, manual.shard_to) if manual.shard_from and manual.shard_to else None
    return PlanRequest(
        run_id=manual.run_id or f"manual-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        ingestion_date=manual.ingestion_date or now.date(),
        trigger="manual",
        sources=manual.sources,
        shard_window=window,
        incremental_window=(manual.since, manual.until) if manual.since is not None else None,
    )


def shards_for(source: Source, request: PlanRequest) -> list[str]:
    """The date shards of one source for this run: 'all' when unsharded; else the backfill window,
    or the ``lookback_days`` days before the ingestion date."""
    sharding = source.sharding
    if not isinstance(sharding, DailySharding):
        return ["all"]
    if request.shard_window is not None:
        first, last = request.shard_window
    else:
        first = request.ingestion_date - timedelta(days=sharding.lookback_days)
        last = request.ingestion_date - timedelta(days=1)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@dataclass
class PlanSummary:
    run_id: str
    ingestion_date: date
    messages: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ingestion_date": self.ingestion_date.isoformat(),
            "messages": self.messages,
            "errors": self.errors,
        }


class Planner:
    def __init__(
        self,
        sources: SourcesFile,
        queues: QueueLocator,
        ledger: Ledger,
        sender: QueueSender,
        client_for: Callable[[Source], VendorClient],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sources = sources
        self.queues = queues
        self.ledger = ledger
        self.sender = sender
        self.client_for = client_for
        self.clock = clock
        self.marks = MarkStore(ledger.client, ledger.bucket)

    def plan(self, request: PlanRequest, deadline: Deadline) -> PlanSummary:
        selected = request.select(self.sources)
        if not selected:
            # The stack's default schedule when every source has a schedule of its own: no run, no
            # manifest (an empty one would be the newest run, and complete, for `apilake status`).
            logger.info("no source to plan", extra={"run_id": request.run_id})
            return PlanSummary(run_id=request.run_id, ingestion_date=request.ingestion_date)
        work: dict[str, list[WorkItem]] = {}
        plans: dict[str, SourcePlan] = {}
        # A retried invocation of this run asks the incremental sources for the windows it asked for; a manual run
        # never replaces a scheduled one.
        read_previous = request.trigger == "manual" or any(s.incremental for s in selected)
        previous = self.ledger.read_manifest(request.run_id) if read_previous else None
        if request.trigger == "manual" and previous is not None and previous.trigger == "schedule":
            raise ConfigError(
                f"manual run {request.run_id}: a scheduled run has that id (planned at "
                f"{previous.created_at.isoformat()}) and a manual run does not replace it: choose another run id"
            )
        for source in selected:
            plans[source.name], work[source.name] = self._plan_source(source, request, deadline, previous)
        for source in selected:
            # A child is in the manifest, its shards to be announced by its parent's pages (apilake.children).
            for child in descendants_of(self.sources.sources, source.name):
                assert child.parent is not None
                mode: Literal["fanout", "chain"] = "fanout" if paginator_for(child).fans_out else "chain"
                plans.setdefault(
                    child.name, SourcePlan(shards=[], parent=ChildOf(source=child.parent.source, mode=mode))
                )
        manifest = RunManifest(
            run_id=request.run_id,
            ingestion_date=request.ingestion_date,
            created_at=self.clock(),
            trigger=request.trigger,
            sources=plans,
        )
        # The manifest is written before anything is sent: whatever happens next, the ledger knows
        # what was expected and can say what is missing.
        self.ledger.write_manifest(manifest)
        self._open_windows(manifest)
        summary = PlanSummary(run_id=request.run_id, ingestion_date=request.ingestion_date)
        for source in selected:
            summary.messages[source.name] = self._send(source, work[source.name], plans[source.name], summary)
            errors = [f"shard {s.shard}: {s.error}" for s in plans[source.name].shards if s.error]
            if errors:
                summary.errors.setdefault(source.name, "; ".join(errors))
        if summary.errors:
            self.ledger.write_manifest(manifest)
            raise PlanningError(f"run {request.run_id}: some sources were not planned: {summary.errors}")
        return summary

    def _plan_source(
        self, source: Source, request: PlanRequest, deadline: Deadline, previous: RunManifest | None = None
    ) -> tuple[SourcePlan, list[WorkItem]]:
        paginator = paginator_for(source)
        mode: Literal["fanout", "chain"] = "fanout" if paginator.fans_out else "chain"
        try:
            # Before any probe: a source with nowhere to send its pages costs no vendor request.
            self.queues.url(source.name)
            window, shard_names = self._window(source, request, previous)
        except (ApilakeError, ClientError, BotoCoreError, ValueError, MarkLostRaceError) as exc:
            logger.error("not planned", extra={"source": source.name, "reason": str(exc)})
            reason = str(exc) if isinstance(exc, ConfigError) else f"incremental mark: {exc}"
            unplanned = [ShardPlan(shard=shard, mode=mode, error=reason) for shard in shards_for(source, request)]
            return SourcePlan(shards=unplanned), []
        shards: list[ShardPlan] = []
        items: list[WorkItem] = []
        for shard in shard_names:
            first = WorkItem(
                run_id=request.run_id, source=source.name, ingestion_date=request.ingestion_date, shard=shard, page=1
            )
            if not paginator.fans_out:
                shards.append(ShardPlan(shard=shard, mode="chain", messages=1))
                items.append(first)
                continue
            probed = None
            try:
                probed = (
                    self.client_for(source).fetch(paginator.request(first), deadline) if paginator.needs_probe else None
                )
                fan = paginator.fan_out(probed)
            except ApilakeError as exc:
                if probed is not None:  # a total that is no number may quote the vendor: credentials blanked
                    scrub_error(exc, probed.scrub)
                logger.error("probe failed", extra={"source": source.name, "shard": shard, "reason": str(exc)})
                shards.append(ShardPlan(shard=shard, mode="fanout", error=f"probe failed: {exc}"))
                continue
            if fan.capped:
                logger.warning(
                    "the vendor caps the page size",
                    extra={"source": source.name, "shard": shard, "page_size": fan.page_size},
                )
            shards.append(
                ShardPlan(
                    shard=shard,
                    mode="fanout",
                    expected_pages=fan.pages,
                    messages=fan.pages,
                    expected_records=fan.records,
                    page_size=fan.page_size,
                    capped=fan.capped,
                )
            )
            sized = {"page_size": fan.page_size} if fan.capped else {}
            items.extend(first.model_copy(update={"page": page, **sized}) for page in range(1, fan.pages + 1))
        return SourcePlan(shards=shards, window=window), items

    def _window(
        self, source: Source, request: PlanRequest, previous: RunManifest | None
    ) -> tuple[IncrementalWindow | None, list[str]]:
        """An incremental source's window (and its one shard): the window this run asked for already (a
        retried invocation), a manual run's explicit one, or after the mark, settled first (apilake.marks)."""
        config = source.incremental
        if config is None:
            return None, shards_for(source, request)
        earlier = previous.sources.get(source.name) if previous else None
        if earlier is not None and earlier.window is not None:
            window = earlier.window
        elif request.incremental_window is not None:
            since, until = request.incremental_window
            if until is not None and config.end_param is None:
                raise ConfigError(f"source '{source.name}': an explicit window's until needs incremental.end_param")
            window = IncrementalWindow(
                param=config.param,
                since=to_json(parse_value(config, since)),
                until=None if until is None else to_json(parse_value(config, until)),
                explicit=True,
            )
        else:
            settled = self.marks.settle(source.name, config, self.clock(), current_run=request.run_id)
            start = parse_value(config, config.initial_value)
            if settled.mark is not None:
                start = max(start, minus_overlap(config, parse_value(config, settled.mark.value)))
            window = IncrementalWindow(
                param=config.param, since=to_json(start), mark=settled.mark.value if settled.mark else None
            )
            logger.info(
                "incremental mark settled",
                extra={
                    "source": source.name,
                    "mark": window.mark,
                    "moved": settled.moved,
                    "closed_runs": settled.closed,
                    "open_runs": settled.waiting,
                    "since": window.since,
                },
            )
        until_value = None if window.until is None else parse_value(config, window.until)
        return window, [window_shard(parse_value(config, window.since), until_value)]

    def _open_windows(self, manifest: RunManifest) -> None:
        """Note each incremental source's run as open (its completion moves the mark when settled);
        explicit windows never move it."""
        for name, plan in manifest.sources.items():
            if plan.window is None or plan.window.explicit or any(shard.error for shard in plan.shards):
                continue
            try:
                self.marks.open_run(name, manifest.run_id, manifest.created_at)
            except (ClientError, BotoCoreError) as exc:
                for shard in plan.shards:
                    shard.error = f"could not note the run for the incremental mark: {exc}"

    def _send(self, source: Source, items: list[WorkItem], plan: SourcePlan, summary: PlanSummary) -> int:
        if all(shard.error for shard in plan.shards):
            return 0  # nothing was planned: no queue, or every probe failed
        try:
            sent = self.sender.send_all(self.queues.url(source.name), items)
        except ApilakeError as exc:
            for shard in plan.shards:
                shard.error = shard.error or f"enqueue failed: {exc}"
            logger.error("enqueue failed", extra={"source": source.name, "reason": str(exc)})
            return 0
        count(source.name, Metric.MESSAGES_ENQUEUED, sent)
        logger.info("source planned", extra={"source": source.name, "messages": sent, "shards": len(plan.shards)})
        return sent

    @classmethod
    def for_settings(cls, settings: PlannerSettings) -> Planner:
        clients = default_clients(settings.aws_endpoint_url)
        vendors = default_vendor_clients(settings.aws_endpoint_url)
        return cls(
            sources=cached_sources(settings.sources_file),
            queues=default_queue_locator(settings.stage, settings.aws_endpoint_url),
            ledger=Ledger(clients.s3, settings.lake_bucket),
            sender=QueueSender(clients.sqs, threads=settings.send_threads),
            client_for=vendors.for_source,
        )
