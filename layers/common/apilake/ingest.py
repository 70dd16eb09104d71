"""The worker's domain: fetch one page, land it once, continue its chain once, account for it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools.utilities.batch import BatchProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse, PartialItemFailures
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from apilake.auth import Credentials
from apilake.aws import cached_sources, default_clients, default_vendor_clients
from apilake.config import Source, SourcesFile
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
from apilake.lake import LakeWriter, WriteResult, page_key
from apilake.ledger import Claim, ClaimState, Ledger
from apilake.messages import MAX_PAGES_PER_SHARD, WorkItem, WorkItemRecord
from apilake.observability import Metric, count, logger
from apilake.pagination import PageRequest, VendorPage, paginator_for
from apilake.queue import QueueSender
from apilake.records import extract_records
from apilake.settings import WorkerSettings

CIRCUIT_THRESHOLD = 3  # retryable failures in a row that stop this batch's calls to the vendor
MAX_VISIBILITY_SECONDS = 43_200  # SQS maximum


def request_fingerprint(request: PageRequest) -> str:
    """A stable hash of what was asked (URL and parameters, credentials excluded)."""
    canonical = request.url + "?" + "&".join(f"{k}={v}" for k, v in sorted(request.params.items()))
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


class ItemSender(Protocol):
    def send_one(self, queue_url: str, item: WorkItem) -> None: ...


class PageFetcher(Protocol):
    credentials: Credentials

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
        sqs_client: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.vendors = vendors
        self.writer = writer
        self.ledger = ledger
        self.sender = sender
        self._sqs = sqs_client
        self._clock = clock
        self._failures_in_a_row = 0
        self._landed: list[tuple[str, WorkItem, dict[str, Any]]] = []  # (message id, item, details)

    @classmethod
    def for_settings(cls, settings: WorkerSettings) -> PageIngester:
        clients = default_clients()
        return cls(
            settings=settings,
            sources=cached_sources(settings.sources_file),
            vendors=default_vendor_clients(),
            writer=LakeWriter(clients.s3, settings.lake_bucket),
            ledger=Ledger(clients.s3, settings.lake_bucket),
            sender=QueueSender(clients.sqs),
            sqs_client=clients.sqs,
        )

    def process(
        self, event: dict[str, Any], context: LambdaContext, processor: BatchProcessor
    ) -> PartialItemFailureResponse:
        """One SQS batch: each record through :meth:`handle`, then the pages that landed recorded in
        the ledger at once. A page whose ledger record could not be written is reported failed, so that its
        message comes back (and lands unchanged, then is recorded)."""
        response = process_partial_response(
            event=event, record_handler=self.handle, processor=processor, context=context
        )
        unrecorded = self._record_landed()
        if unrecorded:
            failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
            response["batchItemFailures"] = [
                *response["batchItemFailures"],
                *(
                    PartialItemFailures(itemIdentifier=message_id)
                    for message_id in unrecorded
                    if message_id not in failed
                ),
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
        """The record handler of the batch processor: returns the key landed, raises to fail the record."""
        item = record.body
        logger.append_keys(
            message_id=record.messageId, source=item.source, shard=item.shard, page=item.page, run_id=item.run_id
        )
        deadline = Deadline(lambda_context.get_remaining_time_in_millis, self.settings.safety_margin_seconds)
        try:
            if self._failures_in_a_row >= CIRCUIT_THRESHOLD:
                raise CircuitOpenError(
                    f"{self._failures_in_a_row} failures in a row for this source: not calling it again in this batch"
                )
            result, details = self._ingest(item, deadline)
        except ParkMessageError as exc:
            if self._park(record, exc.delay_seconds):
                self._failed(record, exc, Metric.PARKED, "message parked until the vendor's Retry-After")
            else:
                self._failed(record, exc, Metric.FAILURES, "message not parked, back after the visibility timeout")
            raise
        except RetryableError as exc:
            self._failed(record, exc, Metric.FAILURES, "page failed, will be retried")
            raise
        except PermanentError as exc:
            self._failed(record, exc, Metric.FAILURES, "page failed permanently; to the DLQ after maxReceiveCount")
            raise
        except (ClientError, BotoCoreError) as exc:
            self._failed(record, exc, Metric.FAILURES, "AWS call failed, will be retried")
            raise RetryableError(f"AWS call failed: {exc}") from exc
        self._failures_in_a_row = 0
        self._landed.append((record.messageId, item, details))
        return result.key

    def _ingest(self, item: WorkItem, deadline: Deadline) -> tuple[WriteResult, dict[str, Any]]:
        if item.source != self.settings.source:
            raise InvalidMessageError(
                f"message for source '{item.source}' reached the worker of '{self.settings.source}'"
            )
        source = self.sources.get(item.source)
        paginator = paginator_for(source)
        client = self.vendors.for_source(source)
        request = paginator.request(item)
        page = client.fetch(request, deadline)
        records = extract_records(page.document, source.records_path)
        following = paginator.next_page(item, page, records)
        next_item = self._next_item(item, following.cursor, paginator.cursor_is_url, client) if following else None
        result = self.writer.write_page(
            page_key(item.source, item.ingestion_date, item.shard, item.page),
            records,
            {
                "fetched-at": self._clock().isoformat(timespec="seconds"),
                "request-fingerprint": request_fingerprint(request),
                "run-id": item.run_id,
            },
        )
        if next_item is not None:
            self._continue(next_item)
        elif not paginator.fans_out:
            self.ledger.mark_end(item)
        details = {
            "key": result.key,
            "sha256": result.sha256,
            "records": result.records,
            "bytes": result.bytes_written,
            "written": result.written,
            "has_next": following is not None,
            "fetched_at": self._clock().isoformat(timespec="seconds"),
        }
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

    def _failed(self, record: WorkItemRecord, error: Exception, metric: Metric, message: str) -> None:
        """Count, log, and note in the ledger why this delivery failed: status says what is missing and why."""
        item = record.body
        permanent = isinstance(error, PermanentError)
        if not permanent:
            self._failures_in_a_row += 1
        count(item.source, metric)
        attempt = int(record.attributes.ApproximateReceiveCount)
        details = {"reason": str(error), "error": type(error).__name__, "attempt": attempt}
        (logger.error if permanent else logger.warning)(message, extra=details)
        try:
            self.ledger.mark_failure(item, {**details, "at": self._clock().isoformat(timespec="seconds")})
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not note the failure in the ledger", extra={"reason": str(exc)})

    def _park(self, record: WorkItemRecord, delay_seconds: int) -> bool:
        """Hide the message for the vendor's wait. False when SQS refuses (it does for a wait that would end
        more than 12 hours after the message was received): the record still fails, and says why."""
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.settings.queue_url,
                ReceiptHandle=record.receiptHandle,
                VisibilityTimeout=max(0, min(delay_seconds, MAX_VISIBILITY_SECONDS)),
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not park the message", extra={"reason": str(exc)})
            return False
        return True
