"""A local stand-in for Lambda's SQS event source mapping, invoking a handler in-process.

It does what the mapping does and nothing more: receive a batch (long poll, up to the batch
size), build the SQS event Lambda would, invoke the handler with a Lambda-like context whose
clock runs down, then delete only the records not named in ``batchItemFailures``. The others
stay in the queue, come back after their visibility timeout, and reach the DLQ through the
queue's own redrive policy. A delete that ``DeleteMessageBatch`` answers as failed is retried when
the failure is SQS's (``SenderFault`` false) and logged either way: a message not deleted comes back
after its visibility timeout, and the stats say how many did not.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]

logger = logging.getLogger(__name__)

DELETE_ATTEMPTS = 3  # DeleteMessageBatch calls for an entry SQS failed on its side (SenderFault false)
DELETE_RETRY_SECONDS = 0.2  # before the second attempt; doubled before each next one


class LambdaContextStub:
    """The attributes of ``LambdaContext`` that handlers and Powertools read, with a running clock."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """The event Lambda builds from ReceiveMessage results."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attributes.get("SentTimestamp", "0"),
                    "SenderId": attributes.get("SenderId", "local"),
                    "ApproximateFirstReceiveTimestamp": attributes.get("ApproximateFirstReceiveTimestamp", "0"),
                },
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


@dataclass
class PollStats:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0  # named in batchItemFailures (or the handler raised): left for the queue to retry
    delete_retries: int = 0  # DeleteMessageBatch entries sent again after a failure on SQS's side
    not_deleted: int = 0  # entries DeleteMessageBatch still failed: back after their visibility timeout
    in_hand: int = 0  # messages of the batch being processed (received, neither deleted nor given back)
    last_receive: float = 0.0  # time.time() of the last receive that got messages
    handler_errors: list[str] = field(default_factory=list)


class SqsEventSource:
    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handler: Handler,
        function_name: str,
        batch_size: int = 10,
        timeout_seconds: float = 60.0,
        wait_seconds: int = 0,
        on_receive: Callable[[], None] | None = None,
    ) -> None:
        """``on_receive``: called when a receive got messages, before the handler runs (the stats say how many)."""
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.handler = handler
        self.function_name = function_name
        self.batch_size = batch_size
        self.timeout_seconds = timeout_seconds
        self.wait_seconds = wait_seconds
        self.on_receive = on_receive
        self.stats = PollStats()

    def poll_once(self) -> int:
        """One receive and, if it got anything, one invocation. Returns the number of messages received."""
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.stats.batches += 1
        self.stats.received += len(messages)
        self.stats.in_hand = len(messages)
        self.stats.last_receive = time.time()
        if self.on_receive is not None:
            self.on_receive()
        event = sqs_event(messages, self.queue_arn)
        context = LambdaContextStub(self.function_name, self.timeout_seconds)
        try:
            result = self.handler(event, context)
            failed_ids = {failure["itemIdentifier"] for failure in (result or {}).get("batchItemFailures", [])}
        except Exception as exc:
            self.stats.handler_errors.append(f"{type(exc).__name__}: {exc}")
            failed_ids = {message["MessageId"] for message in messages}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            self._delete(done[start : start + 10])
        self.stats.failed += len(messages) - len(done)
        self.stats.in_hand = 0
        return len(messages)

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        """Delete up to 10 messages; retry the entries SQS failed on its side, log every failure."""
        pending = {str(i): message for i, message in enumerate(messages)}
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            response = self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": key, "ReceiptHandle": message["ReceiptHandle"]} for key, message in pending.items()],
            )
            failures = response.get("Failed", [])
            self.stats.deleted += len(pending) - len(failures)
            retry = {}
            for failure in failures:
                message = pending[failure["Id"]]
                again = not failure.get("SenderFault", False) and attempt < DELETE_ATTEMPTS
                logger.warning(
                    "DeleteMessageBatch failed for message %s of %s (attempt %d of %d): %s: %s; %s",
                    message["MessageId"],
                    self.queue_url,
                    attempt,
                    DELETE_ATTEMPTS,
                    failure.get("Code", "?"),
                    failure.get("Message", ""),
                    "retrying" if again else "it comes back after its visibility timeout",
                )
                if again:
                    retry[failure["Id"]] = message
                else:
                    self.stats.not_deleted += 1
            if not retry:
                return
            self.stats.delete_retries += len(retry)
            pending = retry
            time.sleep(DELETE_RETRY_SECONDS * 2 ** (attempt - 1))

    def in_queue(self) -> int:
        """Messages visible or in flight (those waiting out a visibility timeout count too)."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, max_seconds: float = 120.0, idle_sleep: float = 0.05) -> PollStats:
        """Poll until the queue holds nothing, visible or in flight, twice in a row (or ``max_seconds`` pass).

        Twice: SQS's counts are approximate, and a message turning visible while they are read can
        be missed by both (moto computes them one after the other, as SQS may).
        """
        stop_at = time.monotonic() + max_seconds
        empty = 0
        while time.monotonic() < stop_at and empty < 2:
            if self.poll_once() == 0:
                empty = empty + 1 if self.in_queue() == 0 else 0
                time.sleep(idle_sleep)
            else:
                empty = 0
        return self.stats
