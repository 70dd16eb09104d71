"""SQS: finding a source's queue by its name; sending work items in batches of 10, several batches
in flight, failed entries retried; sending one, delayed if asked (a parked page)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apilake.exceptions import ConfigError, RetryableError
from apilake.messages import WorkItem
from apilake.names import queue_name

BATCH_SIZE = 10  # the SendMessageBatch maximum
ENTRY_ATTEMPTS = 3
MAX_DELAY_SECONDS = 900  # the SendMessage maximum of DelaySeconds


def encode(item: WorkItem) -> str:
    return item.model_dump_json()


class QueueLocator:
    """Each source's queue URL, found by the queue's name (:func:`apilake.names.queue_name`), the
    name the template gives it. A URL is asked for once and kept (one container, one lookup per
    source); a queue that is missing is asked for again next time (it may have been deployed since)."""

    def __init__(self, sqs_client: Any, stage: str) -> None:
        self._sqs = sqs_client
        self.stage = stage
        self._urls: dict[str, str] = {}

    def url(self, source: str) -> str:
        """The URL of ``source``'s queue; :class:`ConfigError` naming the source and the queue when there is none."""
        if source not in self._urls:
            name = queue_name(self.stage, source)
            try:
                self._urls[source] = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except self._sqs.exceptions.QueueDoesNotExist as exc:
                raise ConfigError(
                    f"source '{source}': no queue {name}: "
                    "deploy the template generated from this sources file (`make template`)"
                ) from exc
        return self._urls[source]


class QueueSender:
    def __init__(self, sqs_client: Any, threads: int = 8) -> None:
        self._sqs = sqs_client
        self._threads = threads

    def send_one(self, queue_url: str, item: WorkItem, delay_seconds: int = 0) -> None:
        """Send ``item``, hidden from consumers for ``delay_seconds`` (0 to :data:`MAX_DELAY_SECONDS`)."""
        self._sqs.send_message(QueueUrl=queue_url, MessageBody=encode(item), DelaySeconds=delay_seconds)

    def send_all(self, queue_url: str, items: Sequence[WorkItem]) -> int:
        """Send every item; raises :class:`RetryableError` if some could not be sent after retries."""
        batches = [items[i : i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE)]
        if len(batches) <= 1:
            unsent = [self._send_batch(queue_url, batch) for batch in batches]
        else:
            with ThreadPoolExecutor(max_workers=min(self._threads, len(batches))) as pool:
                unsent = list(pool.map(lambda batch: self._send_batch(queue_url, batch), batches))
        failed = [reason for reasons in unsent for reason in reasons]
        if failed:
            raise RetryableError(f"{len(failed)} of {len(items)} messages not sent to {queue_url}: {failed[0]}")
        return len(items)

    def _send_batch(self, queue_url: str, batch: Sequence[WorkItem]) -> list[str]:
        pending = {str(index): encode(item) for index, item in enumerate(batch)}
        reasons: dict[str, str] = {}
        for _ in range(ENTRY_ATTEMPTS):
            response = self._sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()],
            )
            reasons = {f["Id"]: f"{f.get('Code')}: {f.get('Message')}" for f in response.get("Failed", [])}
            # Sender faults are permanent (a message over the size limit, say); only the others are retried.
            if not reasons or any(f.get("SenderFault") for f in response.get("Failed", [])):
                break
            pending = {entry_id: pending[entry_id] for entry_id in reasons}
        return list(reasons.values())
