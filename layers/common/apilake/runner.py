"""One process does what the Lambda deployment does (`apilake ingest`): the same planner, paginators, HTTP client,
lake writer and ledger, with an in-memory queue per source instead of SQS.

Each source has a pool of threads (its ``budget.max_concurrency``, or ``workers_per_source``), which take batches
of work items from the source's queue and hand them to :class:`apilake.ingest.PageIngester` as an SQS batch, its
Lambda path unchanged: pages land under their keys (decision 3), chains continue once (decision 4), each batch's
landed pages are recorded in one ledger marker. A source's requests share one pacer at its whole budget. A
page failed for a retryable reason comes back after a delay, as SQS would, until its source's
``max_receive_count``; then it is dead (counted, and its failure noted in the ledger as a Lambda's). A page failed
permanently (a 4xx, a bad response or config: :class:`~apilake.exceptions.PermanentError`) is dead at once: the
runner knows the failure's kind, where SQS redelivers it until ``maxReceiveCount``. A parked page (a long
``Retry-After``) is a delayed item of its queue.

One process runs a run at a time: the run's lease in the ledger (apilake.runner_lease), taken before planning,
renewed while the run lasts. A worker thread that fails outside its batch (a fault of ours) stops the run, with an
error naming the source and the exception, rather than leaving the other threads waiting for its work. With
``max_seconds``, no page is taken past that time: the pages in flight finish, and the ledger says what is missing.

Resuming: a run whose manifest exists (``run_id`` given again) is not planned again. Each fan-out shard's pages
that the ledger does not record as landed are queued; each chain's missing pages, from the claims of its
continuations (the claim holds the work item, cursor included); each child source's, from the shards its parent's
pages announced (apilake.runner_resume). Pages that landed are not fetched again, and a page written but not
recorded (the process died in between) lands unchanged: same key, not rewritten.

Metrics: kept in :data:`apilake.observability.totals` while the run lasts (no EMF document a page), then printed
once at its end: each source's counts in one EMF document, and the stack's pages landed and failed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from apilake.auth import CredentialStore
from apilake.config import Source, SourcesFile
from apilake.exceptions import ConfigError, PlanningError
from apilake.http import Deadline, VendorClients
from apilake.lake import LakeWriter
from apilake.ledger import Ledger, RunManifest, RunStatus
from apilake.messages import WorkItem
from apilake.observability import Metric, count_stack, emit_source_totals, logger, totals, totals_only
from apilake.parent_config import children_of
from apilake.planner import Planner, PlanRequest
from apilake.runner_lease import LEASE_SECONDS, RunLease
from apilake.runner_parts import (
    PartLauncher,
    PartProcess,
    PartResult,
    SourceCounts,
    counts_of,
    families,
    merge_counts,
    split,
)
from apilake.runner_queues import (
    BatchContext,
    Entry,
    PlanCollector,
    RunIngester,
    RunLocator,
    RunPacers,
    RunSender,
    WorkQueues,
    queue_url,
    sqs_record,
)
from apilake.runner_resume import Resumption
from apilake.settings import WorkerSettings

DEFAULT_BATCH_SIZE = 10
MAX_RETRY_DELAY_SECONDS = 60.0
# A chain's continuation claimed but not confirmed is another delivery's only while that delivery can live; here
# every page is in one queue once, so a pending claim is a dead process's: taken over at once.
CLAIM_STALE_SECONDS = 0.001

Echo = Callable[[str], None]


@dataclass
class SourceTally:
    source: str
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0
    dead: int = 0


@dataclass
class RunOutcome:
    run_id: str
    manifest: RunManifest | None
    drained: bool
    wall_seconds: float
    sources: dict[str, SourceTally]
    planner_error: str | None = None
    resumed: bool = False
    queued: int = 0  # pages queued by this process (a resumed run: those the ledger did not have)
    dead_items: list[WorkItem] = field(default_factory=list)
    status: RunStatus | None = None
    error: str | None = None  # why the run stopped short: a worker thread failed, or its lease was taken
    timed_out: bool = False  # stopped at max_seconds
    processes: int = 1  # this one and its parts' (apilake.runner_parts)

    @property
    def pages(self) -> int:
        return sum(s.pages for s in self.sources.values())

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sources.values())

    @property
    def ok(self) -> bool:
        clean = not self.dead_items and self.planner_error is None and self.error is None and self.drained
        return clean and self.status is not None and self.status.complete


# What the run emits once per source at its end (the workers' counts; none per page, see :meth:`Runner.run`).
_EMITTED = (
    Metric.PAGES_INGESTED,
    Metric.PAGES_UNCHANGED,
    Metric.RECORDS_INGESTED,
    Metric.BYTES_WRITTEN,
    Metric.FAILURES,
    Metric.RETRIES,
    Metric.THROTTLED,
    Metric.PARKED,
    Metric.MESSAGES_ENQUEUED,
)
_TALLIED = (
    ("records", Metric.RECORDS_INGESTED),
    ("bytes", Metric.BYTES_WRITTEN),
    ("retries", Metric.RETRIES),
    ("throttled", Metric.THROTTLED),
)


class Runner:
    """One run of some sources, start to end, in this process."""

    def __init__(
        self,
        sources: SourcesFile,
        s3_client: Any,
        bucket: str,
        session: requests.Session,
        credentials: CredentialStore,
        workers_per_source: int | None = None,
        retry_delay_seconds: float = 5.0,
        echo: Echo = print,
        progress_seconds: float = 2.0,
        stop_after_pages: int | None = None,
        max_seconds: float | None = None,
        lease_seconds: float = LEASE_SECONDS,
        processes: int = 1,
        launcher: PartLauncher | None = None,
    ) -> None:
        self.sources = sources
        self.ledger = Ledger(s3_client, bucket)
        self.writer = LakeWriter(s3_client, bucket)
        self.bucket = bucket
        self.vendors = VendorClients(session, credentials, pacer_for=RunPacers())
        self.workers_per_source = workers_per_source
        self.retry_delay_seconds = retry_delay_seconds
        self.echo = echo
        self.progress_seconds = progress_seconds
        self.stop_after_pages = stop_after_pages
        self.max_seconds = max_seconds
        self.lease_seconds = lease_seconds
        # Parts in processes of their own (apilake.runner_parts): not with a page cap (a test's, of this process).
        self.processes = processes if launcher is not None and stop_after_pages is None else 1
        self.launcher = launcher
        self._parts: list[PartProcess] = []
        self._error: str | None = None
        self._timed_out = False
        self.queues = WorkQueues([s.name for s in sources.sources])
        self.sender = RunSender(self.queues, lambda name: self._start(self.sources.get(name)))
        self._dead: list[WorkItem] = []
        self._threads: dict[str, list[threading.Thread]] = {}
        self._lock = threading.Lock()
        self._before = totals.snapshot()

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self, request: PlanRequest) -> RunOutcome:
        """The run, start to end. Its metrics are kept in :data:`totals` while it lasts (no EMF a page) and emitted
        at its end: each source's counts in one document, and the stack's pages landed and failed (the
        container's alarms), zeros too. Raises :class:`~apilake.runner_lease.RunLeaseHeldError` when another
        process runs ``request``'s run."""
        self._prestart(request)
        try:
            lease = RunLease(self.ledger.client, self.bucket, request.run_id, self.lease_seconds)
            lease.acquire()
            lease.keep(lambda: self._halt(f"run {request.run_id}: another process took its lease ({lease.key})"))
            try:
                with totals_only():
                    outcome = self._run(request)
            finally:
                lease.release()
        finally:
            if self.launcher is not None:
                self.launcher.close_unused()
        self.emit_metrics(outcome)
        return outcome

    def emit_metrics(self, outcome: RunOutcome) -> None:
        for name in outcome.sources:
            emit_source_totals(name, {metric: self._delta(name, metric) for metric in _EMITTED})
        count_stack(Metric.INGEST_PAGES_LANDED, outcome.pages)
        count_stack(Metric.INGEST_PAGES_FAILED, len(outcome.dead_items))

    def _run(self, request: PlanRequest) -> RunOutcome:
        started = time.monotonic()
        manifest = self.ledger.read_manifest(request.run_id)
        existed = manifest is not None
        if manifest is not None and manifest.trigger != request.trigger:
            raise ConfigError(
                f"{request.trigger} run {request.run_id}: a {manifest.trigger} run has that id (planned at "
                f"{manifest.created_at.isoformat()}) and a {request.trigger} run does not replace it: choose another "
                "run id"
            )
        # A run planned whole is resumed from its manifest; one with shards the planner could not plan, planned again.
        resumed = manifest is not None and not any(
            shard.error for plan in manifest.sources.values() for shard in plan.shards
        )
        planner_error = None
        if manifest is not None and resumed:
            names = request.sources or list(manifest.sources)
            unplanned = sorted(set(names) - set(manifest.sources))
            if unplanned:
                raise ConfigError(f"run {request.run_id} did not plan {', '.join(unplanned)}: choose another run id")
            items = self.resume_items(manifest, names)
            self.echo(f"resuming run {request.run_id}: {len(items)} page(s) not landed yet")
        else:
            items, planner_error = self._plan(request)
            manifest = self.ledger.read_manifest(request.run_id)
            if manifest is not None and existed:  # planned again: what an earlier attempt landed stays
                items = self.resume_items(manifest, sorted({item.source for item in items}))
        queued, drained = self._drain(self._spread(items, started), started)
        for part in self._parts:
            part.wait()
            if part.result is not None:
                merge_counts(part.result)
                queued += part.result.queued
                drained = drained and part.result.drained
                self._dead.extend(part.result.dead_items)
                self._timed_out = self._timed_out or part.result.timed_out
            else:
                drained = False
        outcome = RunOutcome(
            run_id=request.run_id,
            manifest=manifest,
            drained=drained,
            wall_seconds=time.monotonic() - started,
            sources=self._tallies(manifest),
            planner_error=planner_error,
            resumed=resumed,
            queued=queued,
            dead_items=list(self._dead),
            error=self._error,
            timed_out=self._timed_out,
            processes=1 + len(self._parts),
        )
        if manifest is not None:  # with its pages' details: the run's report is built from it, not read again
            outcome.status = self.ledger.status(manifest, details=True)
        return outcome

    def work(self, items: Sequence[WorkItem]) -> PartResult:
        """``items`` worked in this process, no lease, plan or status (a part of a run whose process has those)."""
        with totals_only():
            queued, drained = self._drain(items, time.monotonic())
        return PartResult(
            counts=counts_of(list(self._threads), self._before),
            queued=queued,
            dead_items=list(self._dead),
            drained=drained,
            error=self._error,
            timed_out=self._timed_out,
        )

    def _drain(self, items: Sequence[WorkItem], started: float) -> tuple[int, bool]:
        """``items`` queued and their sources' workers started, until they are done: how many were queued (each page
        once), and whether every queue drained."""
        queued = sum(self.queues.offer(item) for item in items)
        for name in sorted({item.source for item in items}):
            self._start(self.sources.get(name))
        return queued, self._wait(started)

    def counts(self) -> dict[str, SourceCounts]:
        """Each started source's pages landed, queued and delayed so far in this process."""
        return {
            name: SourceCounts(
                landed=self._landed(name), queued=self.queues.queued[name], delayed=self.queues.delayed(name)
            )
            for name in list(self._threads)
        }

    def _prestart(self, request: PlanRequest) -> None:
        """The parts' processes started now, as many as the run's families may need, so that their start-up overlaps
        the lease and the planning (those given no part are closed after)."""
        if self.processes > 1 and self.launcher is not None:
            with contextlib.suppress(ConfigError):  # a request the planning refuses, with its own words
                names = request.sources or [source.name for source in request.select(self.sources)]
                self.launcher.prestart(min(self.processes, len(families(self.sources, names))) - 1)

    def _spread(self, items: list[WorkItem], started: float) -> list[WorkItem]:
        """This process's items: all of them, or with ``processes`` above 1 the first part's, the other parts started
        in processes of their own (apilake.runner_parts)."""
        if self.processes <= 1 or self.launcher is None:
            return items
        parts = split(self.sources, items, self.processes)
        left = None if self.max_seconds is None else max(0.0, self.max_seconds - (time.monotonic() - started))
        for number, part_items in enumerate(parts[1:], start=1):
            if self._halted():  # halted meanwhile (a lost lease, a part that failed): no part more
                break
            part = self.launcher.start(number, part_items, left, self._part_ended)
            self._parts.append(part)
            if self._halted():  # halted while it started: _halt may not have seen it
                part.stop()
        self.launcher.close_unused()  # those started ahead for families with nothing left to do
        return parts[0] if parts else []

    def _halted(self) -> bool:
        return self.queues.stopped

    def _part_ended(self, part: PartProcess) -> None:
        error = part.failure or (part.result.error if part.result is not None else None)
        if error is not None:
            self._halt(f"{part.name}: {error}" if part.failure is None else error)

    def _plan(self, request: PlanRequest) -> tuple[list[WorkItem], str | None]:
        names = request.select(self.sources)
        collector = PlanCollector()
        planner = Planner(
            self.sources, RunLocator([s.name for s in names]), self.ledger, collector, self.vendors.for_source
        )
        error = None
        try:
            summary = planner.plan(request, Deadline.unbounded())
            self.echo(f"planner: run {summary.run_id}, messages {summary.messages}")
        except PlanningError as exc:
            error = str(exc)
            self.echo(f"planner failed: {error}")
        return collector.items, error

    def resume_items(self, manifest: RunManifest, names: Sequence[str]) -> list[WorkItem]:
        """The pages of ``names`` (and of their children) in ``manifest`` that the ledger does not record as landed,
        as work items (apilake.runner_resume)."""
        return Resumption(self.ledger, self.sources, manifest).items(names)

    # -- the workers -----------------------------------------------------------------------------------------
    def _start(self, source: Source) -> None:
        with self._lock:
            if source.name in self._threads:
                return
            workers = self.workers_per_source or source.budget.max_concurrency
            threads = [
                threading.Thread(target=self._work, args=(source, workers), name=f"{source.name}-{n}", daemon=True)
                for n in range(workers)
            ]
            self._threads[source.name] = threads
        for thread in threads:
            thread.start()

    def _halt(self, error: str) -> None:
        """Stop the run for ``error`` (the first one kept): no page is taken any more."""
        with self._lock:
            if self._error is None:
                self._error = error
        self.queues.stop()
        for part in self._parts:
            part.stop()

    def _work(self, source: Source, workers: int) -> None:
        """A worker thread: a fault outside its batches (ours) stops the run, rather than leaving the source's work
        undone and every other thread waiting for it."""
        try:
            self._serve(source, workers)
        except Exception as exc:
            name = threading.current_thread().name
            self._halt(f"source {source.name}: worker thread {name} failed: {type(exc).__name__}: {exc}")
            logger.exception("worker thread failed: the run stops", extra={"source": source.name, "worker": name})

    def _serve(self, source: Source, workers: int) -> None:
        settings = WorkerSettings(
            lake_bucket=self.bucket,
            source=source.name,
            queue_url=queue_url(source.name),
            continuation_stale_seconds=CLAIM_STALE_SECONDS,
            # A parent's children go to their queues here (their workers start with their first item).
            child_queue_urls={
                child.name: queue_url(child.name) for child in children_of(self.sources.sources, source.name)
            },
        )
        batch_size = source.worker.batch_size or DEFAULT_BATCH_SIZE
        while (entries := self.queues.take(source.name, batch_size, workers)) is not None:
            failed, permanent = self._batch(settings, entries)
            finished = 0
            for entry in entries:
                if entry.message_id not in failed:
                    finished += 1
                elif entry.message_id in permanent or entry.receives >= source.worker.max_receive_count:
                    why = "failed permanently" if entry.message_id in permanent else "failed on every receive"
                    logger.error(f"page {why}: dead", extra={"item": entry.item.model_dump_json()})
                    with self._lock:
                        self._dead.append(entry.item)
                    finished += 1
                else:
                    delay = min(MAX_RETRY_DELAY_SECONDS, self.retry_delay_seconds * 2 ** (entry.receives - 1))
                    self.queues.retry(entry, delay)
            self.queues.done(finished)
            if self.stop_after_pages is not None and self._landed() >= self.stop_after_pages:
                self.queues.stop()

    def _batch(self, settings: WorkerSettings, entries: list[Entry]) -> tuple[set[str], set[str]]:
        """One batch through the worker's own path; the message ids of the items that failed, and of those of them
        that failed permanently."""
        event = {"Records": [sqs_record(entry) for entry in entries]}
        ingester = RunIngester(settings, self.sources, self.vendors, self.writer, self.ledger, self.sender)
        try:
            response = ingester.process(event, BatchContext())
        except Exception:  # a fault of ours, not of a page: every item of the batch comes back
            logger.exception("batch failed", extra={"source": settings.source, "items": len(entries)})
            return {entry.message_id for entry in entries}, set()
        failed = {str(failure["itemIdentifier"]) for failure in response["batchItemFailures"]}
        return failed, ingester.permanent & failed

    # -- progress --------------------------------------------------------------------------------------------
    def _delta(self, source: str, metric: Metric) -> float:
        """``metric`` of ``source`` counted since this runner was made."""
        return totals.get(source, metric) - self._before.get((source, metric.value), 0)

    def _landed(self, source: str | None = None) -> int:
        names = [source] if source else list(self.queues.queued)
        here = sum(int(self._delta(name, m)) for name in names for m in (Metric.PAGES_INGESTED, Metric.PAGES_UNCHANGED))
        # A running part's pages (its result's counts are added to the totals when it ends).
        return here + sum(
            part.progress[name].landed
            for part in self._parts
            if part.result is None
            for name in names
            if name in part.progress
        )

    def _wait(self, started: float) -> bool:
        """Until every worker is done, the sources' progress every ``progress_seconds``; True when drained."""
        last = time.monotonic()
        while True:
            with self._lock:
                threads = [thread for group in self._threads.values() for thread in group]
            alive = [thread for thread in threads if thread.is_alive()]
            if not alive and not any(part.running() for part in self._parts):
                break
            if alive:
                alive[0].join(timeout=0.2)
            else:
                time.sleep(0.05)
            over = self.max_seconds is not None and time.monotonic() - started >= self.max_seconds
            if over and not self.queues.stopped:
                self._timed_out = True
                self.echo(f"max seconds ({self.max_seconds:g}) passed: no page taken any more, those in flight finish")
                self.queues.stop()
                for part in self._parts:
                    part.stop()
            if time.monotonic() - last >= self.progress_seconds:
                last = time.monotonic()
                self.echo(f"  [{last - started:5.1f}s] {self.progress()}")
        return not self.queues.stopped and self.queues.outstanding == 0

    def progress(self) -> str:
        counts = self.counts()
        for part in self._parts:
            counts.update(part.progress)
        cells = []
        for name in sorted(counts, key=[source.name for source in self.sources.sources].index):
            count = counts[name]
            cells.append(
                f"{name} {count.landed} done/{count.queued} queued"
                + (f" ({count.delayed} delayed)" if count.delayed else "")
            )
        return " | ".join(cells)

    def _tallies(self, manifest: RunManifest | None) -> dict[str, SourceTally]:
        names = list(manifest.sources) if manifest else list(self._threads)
        tallies = {}
        for name in names:
            tally = SourceTally(name, pages=self._landed(name))
            for attribute, metric in _TALLIED:
                setattr(tally, attribute, int(self._delta(name, metric)))
            tally.dead = sum(1 for item in self._dead if item.source == name)
            tallies[name] = tally
        return tallies
