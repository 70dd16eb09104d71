"""The worker's domain: fetch one page, land it once, continue its chain once, account for it;
or park it in its queue while the vendor asks us to wait."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from apilake.auth import Authenticator, scrub_error
from apilake.aws import cached_sources, default_clients, default_vendor_clients
from apilake.batch import BatchResponse, ItemFailure, process_batch
from apilake.children import announced, bind, include_parent, parent_metadata
from apilake.config import Source, SourcesFile
from apilake.curated import text_kinds
from apilake.exceptions import (
    BadResponseError,
    CircuitOpenError,
    ContinuationInFlightError,
    InvalidMessageError,
    ParkMessageError,
    PermanentError,
    RetryableError,
)
from apilake.http import Deadline
from apilake.incremental import HighWater, to_json
from apilake.lake import LakeWriter, WriteResult, page_key
from apilake.ledger import Claim, ClaimState, Ledger
from apilake.messages import MAX_PAGES_PER_SHARD, WorkItem, WorkItemRecord
from apilake.observability import Metric, count, logger, std_logger
from apilake.pagination import PageRequest, Paginator, VendorPage, paginator_for
from apilake.parent_config import children_of
from apilake.queue import MAX_DELAY_SECONDS, QueueSender
from apilake.records import FieldKinds, extract_records
from apilake.request_body import canonical as canonical_json
from apilake.settings import WorkerSettings

CIRCUIT_THRESHOLD = 3  # retryable failures in a row that stop this batch's calls to the vendor
# A page is parked (re-sent delayed) while the vendor asks to wait, for at most two days since its
# first park: a daily quota that resets, with a day to spare. Past that it fails like any other page,
# and reaches the DLQ on its receive count, where operators look.
MAX_PARKED_SECONDS = 2 * 86_400
DUE_MARGIN_SECONDS = 1.0  # a parked page this close to its time is due (Retry-After counts whole seconds)


def request_fingerprint(request: PageRequest) -> str:
    """A stable hash of what was asked (URL and parameters, credentials excluded; a POST's method and body, its
    keys sorted). A GET's is what it always was, so the pages landed before POST existed keep theirs."""
    canonical = request.url + "?" + "&".join(f"{k}={v}" for k, v in sorted(request.params.items()))
    if request.method != "GET" or request.body is not None:
        canonical += f"\n{request.method}\n{canonical_json(request.body)}"
    return hashlib.sha256(canonical.encode()).hexdigest()


# What the ingester needs of its collaborators: LakeWriter, Ledger, QueueSender and VendorClients
# in a Lambda (see :meth:`PageIngester.for_settings`), small fakes in the unit tests.
class PageWriter(Protocol):
    def write_page(self, key: str, records: Sequence[Any], metadata: dict[str, str]) -> WriteResult: ...


class WorkerLedger(Protocol):
    def mark_landed(self, landed: list[tuple[WorkItem, dict[str, Any]]]) -> int: ...
    def mark_failure(self, item: WorkItem, details: dict[str, Any]) -> None: ...
    def mark_end(self, item: WorkItem) -> None: ...
    def claim_continuation(self, next_item: WorkItem) -> ClaimState: ...
    def first_page_of_cursor(self, next_item: WorkItem) -> int: ...
    def confirm_continuation(self, next_item: WorkItem) -> None: ...
    def release_continuation(self, next_item: WorkItem) -> None: ...
    def claim_children(self, parent: WorkItem, child: str, shards: list[str]) -> ClaimState: ...
    def confirm_children(self, parent: WorkItem, child: str, shards: list[str]) -> None: ...
    def release_children(self, parent: WorkItem, child: str) -> None: ...


class ItemSender(Protocol):
    """Sends work items: the chain's next page and a parked copy to the source's own queue, a parent's child work
    to each child's queue (``WorkerSettings.child_queue_urls``; a one-process runner may route by ``item.source``)."""

    def send_one(self, queue_url: str, item: WorkItem, delay_seconds: int = 0) -> None: ...
    def send_all(self, queue_url: str, items: Sequence[WorkItem]) -> int: ...  # in batches; raises if some unsent


class PageFetcher(Protocol):
    @property
    def credentials(self) -> Authenticator: ...  # a fixed set, or a source's (resolved per attempt)

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage: ...


class Vendors(Protocol):
    def for_source(self, source: Source) -> PageFetcher: ...


class PageIngester:
    """Handles the records of one SQS batch. Built per invocation from per-container parts."""

    def __init__(
        self,
        settings: WorkerSettings,
        sources: SourcesFile,
        vendors: Vendors,
        writer: PageWriter,
        ledger: WorkerLedger,
        sender: ItemSender,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.vendors = vendors
        self.writer = writer
        self.ledger = ledger
        self.sender = sender
        self._clock = clock
        self._failures_in_a_row = 0
        self._vendor_wait_until: datetime | None = None  # the latest Retry-After the vendor gave in this batch
        self._landed: list[tuple[str, WorkItem, dict[str, Any]]] = []  # (message id, item, details)

    @classmethod
    def for_settings(cls, settings: WorkerSettings) -> PageIngester:
        clients = default_clients(settings.aws_endpoint_url)
        return cls(
            settings=settings,
            sources=cached_sources(settings.sources_file),
            vendors=default_vendor_clients(settings.aws_endpoint_url),
            writer=LakeWriter(clients.s3, settings.lake_bucket),
            ledger=Ledger(clients.s3, settings.lake_bucket),
            sender=QueueSender(clients.sqs),
        )

    def process(self, event: dict[str, Any], context: LambdaContext) -> BatchResponse:
        """One SQS batch: each record through :meth:`handle` (apilake.batch: a record fails alone), then the
        pages that landed recorded in the ledger at once. A page whose ledger record could not be written is
        reported failed, so that its message comes back (and lands unchanged, then is recorded)."""
        response = process_batch(event, WorkItemRecord, lambda record: self.handle(record, context), std_logger)
        unrecorded = self._record_landed()
        if unrecorded:
            failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
            response["batchItemFailures"] = [
                *response["batchItemFailures"],
                *(ItemFailure(itemIdentifier=message_id) for message_id in unrecorded if message_id not in failed),
            ]
        return response

    def _record_landed(self) -> list[str]:
        """Write the ledger markers of the pages landed so far; returns the message ids of the pages
        that could not be recorded."""
        landed, self._landed = self._landed, []
        if not landed:
            return []
        try:
            self.ledger.mark_landed([(item, details) for _, item, details in landed])
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not record landed pages in the ledger: their messages will come back",
                extra={"pages": len(landed), "reason": str(exc)},
            )
            return [message_id for message_id, _, _ in landed]
        return []

    def handle(self, record: WorkItemRecord, lambda_context: LambdaContext) -> str:
        """The record handler of the batch processor: returns the key landed (or when the page was parked
        until), raises to fail the record."""
        item = record.body
        # This thread's keys (`apilake ingest` runs a source's batches in threads of one process, each its own page);
        # a Lambda's handler clears them at every invocation (inject_lambda_context(clear_state=True)).
        logger.thread_safe_append_keys(
            message_id=record.messageId,
            source=item.source,
            shard=item.shard,
            page=item.page,
            run_id=item.run_id,
            parks=item.park.count if item.park else 0,
        )
        deadline = Deadline(lambda_context.get_remaining_time_in_millis, self.settings.safety_margin_seconds)
        try:
            return self._handle(record, deadline)
        except RetryableError as exc:
            self._failed(record, exc, "page failed, will be retried")
            raise
        except PermanentError as exc:
            self._failed(record, exc, "page failed permanently; to the DLQ after maxReceiveCount")
            raise
        except (ClientError, BotoCoreError) as exc:
            self._failed(record, exc, "AWS call failed, will be retried")
            raise RetryableError(f"AWS call failed: {exc}") from exc

    def _handle(self, record: WorkItemRecord, deadline: Deadline) -> str:
        item = record.body
        if item.source != self.settings.source:
            raise InvalidMessageError(
                f"message for source '{item.source}' reached the worker of '{self.settings.source}'"
            )
        not_before = self._not_due_until(item)
        if not_before is not None:
            own = item.park is not None and item.park.until == not_before
            return self._park(
                record, not_before, "its wait is not over" if own else "the vendor asked this batch to wait"
            )
        if self._failures_in_a_row >= CIRCUIT_THRESHOLD:
            raise CircuitOpenError(
                f"{self._failures_in_a_row} failures in a row for this source: not calling it again in this batch"
            )
        try:
            result, details = self._ingest(item, deadline)
        except ParkMessageError as exc:
            # Past the limit is not parked: capping keeps a wait of 400 digits from overflowing a datetime.
            wait = timedelta(seconds=min(exc.delay_seconds, MAX_PARKED_SECONDS + 1))
            not_before = self._clock() + wait
            self._vendor_wait_until = max(not_before, self._vendor_wait_until or not_before)
            return self._park(record, not_before, str(exc))
        self._failures_in_a_row = 0
        self._landed.append((record.messageId, item, details))
        return result.key

    def _ingest(self, item: WorkItem, deadline: Deadline) -> tuple[WriteResult, dict[str, Any]]:
        source = bind(self.sources.get(item.source), item)  # a child's placeholders filled from its parent record
        paginator = paginator_for(source)
        client = self.vendors.for_source(source)
        request = paginator.request(item)
        page = client.fetch(request, deadline)
        try:  # an error past the fetch may quote the vendor (a total, a cursor, a parent's value): credentials blanked
            return self._land(item, source, paginator, client, request, page)
        except Exception as exc:
            scrub_error(exc, page.scrub)
            raise

    def _land(
        self,
        item: WorkItem,
        source: Source,
        paginator: Paginator,
        client: PageFetcher,
        request: PageRequest,
        page: VendorPage,
    ) -> tuple[WriteResult, dict[str, Any]]:
        """The fetched page: its records, its chain's next page and its children checked, then written and noted."""
        # A child's records with parent.include's _parent_<placeholder> fields (the next page and grandchildren too)
        records = include_parent(source, item, extract_records(page.document, source.records_path))
        following = paginator.next_page(item, page, records)
        next_item = self._next_item(item, following.cursor, paginator.cursor_is_url, client) if following else None
        children = self._children(item, records)  # checked before anything of this page is written
        # Noted as the page is encoded: the top-level fields' kinds of a source with columns (its schema drift,
        # apilake.drift), an incremental source's highest cursor value.
        kinds = FieldKinds(records, text_kinds(source.columns)) if source.columns is not None else None
        encoded: Sequence[Any] = records if kinds is None else kinds
        observed = HighWater(encoded, source.incremental) if source.incremental else None
        result = self.writer.write_page(
            page_key(item.source, item.ingestion_date, item.shard, item.page),
            encoded if observed is None else observed,
            {
                "fetched-at": self._clock().isoformat(timespec="seconds"),
                "request-fingerprint": request_fingerprint(request),
                "run-id": item.run_id,
                **parent_metadata(item),  # a child page: the parent values it was fetched for
            },
        )
        if next_item is not None:
            self._continue(next_item)
        elif not paginator.fans_out:
            self.ledger.mark_end(item)
        for child, items in children:
            self._announce(item, child, items)
        details = {
            "key": result.key,
            "sha256": result.sha256,
            "records": result.records,
            "bytes": result.bytes_written,
            "written": result.written,
            "has_next": following is not None,
            "fetched_at": self._clock().isoformat(timespec="seconds"),
            # What landing it took (the run report's retries, 429s, latency and parks)
            "attempts": page.attempts,
            "throttled": page.throttled,
            "latency_ms": round(page.latency_ms, 1),
            "parks": item.park.count if item.park else 0,
        }
        if item.parent_values is not None:
            details["parent_values"] = item.parent_values  # what joins the page's records to their parent record
        if observed is not None and observed.highest is not None:
            details["cursor_max"] = to_json(observed.highest)
        if kinds is not None:
            details["fields"] = kinds.fields
        count(item.source, Metric.PAGES_INGESTED if result.written else Metric.PAGES_UNCHANGED)
        count(item.source, Metric.RECORDS_INGESTED, result.records)
        count(item.source, Metric.BYTES_WRITTEN, result.bytes_written)
        logger.info(
            "page landed" if result.written else "page unchanged",
            extra={
                "key": result.key,
                "records": result.records,
                "bytes": result.bytes_written,
                "has_next": following is not None,
            },
        )
        return result, details

    def _next_item(self, item: WorkItem, cursor: str | None, cursor_is_url: bool, client: PageFetcher) -> WorkItem:
        """The chain's next work item, checked before anything of this page is written: a chain
        longer than a shard may hold, or a cursor the vendor already gave, stops the chain here."""
        if item.page >= MAX_PAGES_PER_SHARD:
            raise BadResponseError(f"the chain goes on past page {MAX_PAGES_PER_SHARD}, the most a shard may hold")
        if cursor is not None and cursor_is_url:
            cursor = client.credentials.strip(cursor)
        next_item = item.next(cursor)
        if cursor is not None:
            first = self.ledger.first_page_of_cursor(next_item)
            if first != next_item.page:
                raise BadResponseError(
                    f"the vendor's cursor for page {next_item.page} is the one it gave for page {first}: "
                    "stopping a loop"
                )
        return next_item

    def _children(self, item: WorkItem, records: Sequence[Any]) -> list[tuple[str, list[WorkItem]]]:
        """Each child source of this page's source -> page 1 of each child shard its records announce."""
        found = []
        for child in children_of(self.sources.sources, item.source):
            if child.name not in self.settings.child_queue_urls:
                raise PermanentError(
                    f"source '{item.source}': no queue URL for its child source '{child.name}' "
                    "(APILAKE_CHILD_QUEUE_URLS): deploy the template generated from this sources file (`make template`)"
                )
            found.append((child.name, announced(item, child, records)))
        return found

    def _announce(self, parent: WorkItem, child: str, items: list[WorkItem]) -> None:
        """Enqueue the child work this page announced at most once per claim, however often the page is
        delivered (a page without records announces nothing and claims nothing)."""
        if not items:
            return
        shards = [item.shard for item in items]
        state = self.ledger.claim_children(parent, child, shards)
        if state.claim is Claim.SENT:
            logger.info("child work already enqueued", extra={"child": child, "child_shards": len(shards)})
            return
        if state.claim is Claim.PENDING and state.age_seconds < self.settings.continuation_stale_seconds:
            raise ContinuationInFlightError(
                f"the work of child source '{child}' was claimed {state.age_seconds:.0f}s ago by another delivery, "
                "not yet confirmed"
            )
        try:
            # In batches of 10 (SendMessageBatch); any item unsent releases the claim: the redelivered page sends
            # every one again, the duplicates landing on the same keys.
            self.sender.send_all(self.settings.child_queue_urls[child], items)
        except (ClientError, BotoCoreError, RetryableError) as exc:
            if state.claim is Claim.CREATED:
                self.ledger.release_children(parent, child)
            raise RetryableError(f"could not enqueue the work of child source '{child}': {exc}") from exc
        self.ledger.confirm_children(parent, child, shards)
        count(child, Metric.MESSAGES_ENQUEUED, len(items))
        logger.info("child work enqueued", extra={"child": child, "child_shards": len(shards)})

    def _continue(self, next_item: WorkItem) -> None:
        """Enqueue the chain's next page at most once per claim, however often this message is delivered."""
        state = self.ledger.claim_continuation(next_item)
        if state.claim is Claim.SENT:
            logger.info("next page already enqueued", extra={"next_page": next_item.page})
            return
        if state.claim is Claim.PENDING and state.age_seconds < self.settings.continuation_stale_seconds:
            raise ContinuationInFlightError(
                f"page {next_item.page} was claimed {state.age_seconds:.0f}s ago by another delivery, not yet confirmed"
            )
        try:
            self.sender.send_one(self.settings.queue_url, next_item)
        except (ClientError, BotoCoreError) as exc:
            if state.claim is Claim.CREATED:
                self.ledger.release_continuation(next_item)
            raise RetryableError(f"could not enqueue page {next_item.page}: {exc}") from exc
        self.ledger.confirm_continuation(next_item)

    def _not_due_until(self, item: WorkItem) -> datetime | None:
        """When the page may be asked for, if that is still ahead: the end of its own park, or of a wait
        the vendor asked for earlier in this batch (a worker serves one source: the wait holds for all)."""
        waits = [wait for wait in (item.park.until if item.park else None, self._vendor_wait_until) if wait is not None]
        if waits and (max(waits) - self._clock()).total_seconds() > DUE_MARGIN_SECONDS:
            return max(waits)
        return None

    def _park(self, record: WorkItemRecord, not_before: datetime, reason: str) -> str:
        """Send a copy of the page to its own queue, delayed until ``not_before`` (at most 15 minutes: a
        later time travels in the copy, which is parked again on arrival without calling the vendor), and
        let this delivery succeed, so that SQS deletes it: a park never spends the message's receives.

        A delivery that is not deleted after its copy was sent (the worker died) comes back and is parked
        or landed again: one more copy of the page in the queue, at most, per such failure. The page lands
        under its one key and is not rewritten (decision 3), and its chain's next page is claimed once
        (decision 4): an extra copy costs a vendor request, never a duplicate page or a forked chain."""
        item = record.body
        now = self._clock()
        parked = item.parked(not_before, now)
        park = parked.park
        assert park is not None
        if (not_before - park.since).total_seconds() > MAX_PARKED_SECONDS:
            raise RetryableError(
                f"{reason}; parked since {park.since.isoformat(timespec='seconds')}, the page would wait past "
                f"the {MAX_PARKED_SECONDS // 3600}-hour limit: not parked again"
            )
        delay = min(MAX_DELAY_SECONDS, max(0, math.ceil((not_before - now).total_seconds())))
        try:
            self.sender.send_one(self.settings.queue_url, parked, delay_seconds=delay)
        except (ClientError, BotoCoreError) as exc:
            raise RetryableError(f"{reason}; could not park page {item.page}: {exc}") from exc
        count(item.source, Metric.PARKED)
        details = {
            "reason": reason,
            "parks": park.count,
            "parked_since": park.since.isoformat(timespec="seconds"),
            "parked_seconds": round((now - park.since).total_seconds()),
            "not_before": not_before.isoformat(timespec="seconds"),
            "delay_seconds": delay,
        }
        if item.park is not None and item.park.until == not_before:
            logger.info("page parked again until its wait is over", extra=details)
        else:
            logger.warning("page parked: the vendor asked to wait", extra=details)
            self._note(
                record,
                ParkMessageError.__name__,
                f"{reason}; park {park.count} since {details['parked_since']}, next try at {details['not_before']}",
            )
        return f"parked until {details['not_before']}"

    def _failed(self, record: WorkItemRecord, error: Exception, message: str) -> None:
        """Count, log, and note in the ledger why this delivery failed: status says what is missing and why."""
        permanent = isinstance(error, PermanentError)
        if not permanent:
            self._failures_in_a_row += 1
        count(record.body.source, Metric.FAILURES)
        attempt = int(record.attributes.ApproximateReceiveCount)
        (logger.error if permanent else logger.warning)(
            message, extra={"reason": str(error), "error": type(error).__name__, "attempt": attempt}
        )
        self._note(record, type(error).__name__, str(error))

    def _note(self, record: WorkItemRecord, error: str, reason: str) -> None:
        """Note in the ledger why the page is missing (its last failure or park)."""
        details = {
            "reason": reason,
            "error": error,
            "attempt": int(record.attributes.ApproximateReceiveCount),
            "at": self._clock().isoformat(timespec="seconds"),
        }
        try:
            self.ledger.mark_failure(record.body, details)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not note the failure in the ledger", extra={"reason": str(exc)})
