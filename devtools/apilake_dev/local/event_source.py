"""A local stand-in for Lambda's SQS event source mapping, invoking a handler in-process.

It does what the mapping does and nothing more: receive a batch (long poll, up to the batch
size), build the SQS event Lambda would, invoke the handler with a Lambda-like context whose
clock runs down, then delete only the records not named in ``batchItemFailures``. The others
stay in the queue, come back after their visibility timeout, and reach the DLQ through the
queue's own redrive policy.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


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
    failed: int = 0
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
    ) -> None:
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
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        self.stats.deleted += len(done)
        self.stats.failed += len(messages) - len(done)
        return len(messages)

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
