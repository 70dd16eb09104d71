"""A DLQ's messages back to their queue, and a look at a DLQ without consuming it.

Moving them back is SQS's own message move task (``StartMessageMoveTask``, then ``ListMessageMoveTasks``
until it is done). Where the endpoint has no such API (moto's server), the messages are received, sent
to the queue and deleted from the DLQ, in batches of ten (:func:`redrive`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from apilake.exceptions import ApilakeError

PEEK_VISIBILITY_SECONDS = 30
# Long polling: a receive without a wait asks a sample of SQS's servers and may answer nothing while the
# queue holds messages; with a wait it asks them all, and answers as soon as there is a message.
PEEK_WAIT_SECONDS = 1
MOVE_TASK_DONE = ("COMPLETED", "FAILED", "CANCELLED")


def peek(sqs: Any, dlq_url: str, wait_seconds: int = PEEK_WAIT_SECONDS) -> list[dict[str, Any]]:
    """Every visible message in the queue, left in it (visible again at once). Messages another consumer has
    received (in flight) and delayed ones are not seen: compare with the queue's depth. ``wait_seconds``: each
    receive's long poll (the last one, answering nothing, waits that long; 0 only for a local stand-in)."""
    found: dict[str, dict[str, Any]] = {}
    while batch := sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
        WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"],
    ).get("Messages", []):
        for message in batch:
            found.setdefault(message["MessageId"], message)
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": PEEK_VISIBILITY_SECONDS}
                for i, m in enumerate(batch)
            ],
        )
    messages = list(found.values())
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(chunk)
            ],
        )
    return messages


def redrive(sqs: Any, dlq_url: str, queue_url: str) -> int:
    """Send every DLQ message to ``queue_url``, deleting from the DLQ only what was sent; returns the count."""
    moved = 0
    while batch := sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        sent = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(batch)]
        )
        done = [batch[int(entry["Id"])] for entry in sent.get("Successful", [])]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        moved += len(done)
        if len(done) < len(batch):
            failed = sent.get("Failed", [])
            raise ApilakeError(
                f"{len(failed)} message(s) could not be moved back ({moved} were): {failed[0].get('Message')}"
            )
    return moved


def move_task_unavailable(exc: ClientError) -> bool:
    """Whether the endpoint does not know the message move task's API at all.

    moto's server (5.x) answers ``StartMessageMoveTask`` with a bare HTTP 500, an HTML page and no AWS
    error document, for which botocore uses the status as the error code. SQS answers its own errors
    with a code of its own (``ResourceNotFoundException``, ``UnsupportedOperation``, ``InternalError``, ...):
    those are errors to report, not a reason to copy the messages by hand.
    """
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 500 and exc.response.get("Error", {}).get("Code") == "500"


@dataclass(frozen=True)
class MoveResult:
    """How the messages went back: SQS's move task (its handle, status and counts) or copied by hand."""

    method: Literal["move_task", "copy"]
    status: str  # RUNNING, COMPLETED, FAILED, CANCELLING, CANCELLED (a move task's); COMPLETED (a copy)
    moved: int
    to_move: int | None = None
    task_handle: str | None = None
    failure_reason: str | None = None
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "status": self.status,
            "moved": self.moved,
            "to_move": self.to_move,
            "task_handle": self.task_handle,
            "failure_reason": self.failure_reason,
            "timed_out": self.timed_out,
        }


@dataclass
class MoveTask:
    """SQS's message move task from a DLQ back to its queue, and the wait for it."""

    sqs: Any
    dlq_arn: str
    queue_arn: str
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def start(self, per_second: int | None = None) -> str:
        """Start the move; its task handle. ``per_second``: SQS's MaxNumberOfMessagesPerSecond (unset: SQS's pace)."""
        rate = {} if per_second is None else {"MaxNumberOfMessagesPerSecond": per_second}
        response = self.sqs.start_message_move_task(SourceArn=self.dlq_arn, DestinationArn=self.queue_arn, **rate)
        handle: str = response["TaskHandle"]
        return handle

    def wait(self, handle: str, timeout: float, interval: float) -> MoveResult:
        """Poll the DLQ's latest move task until it is COMPLETED, FAILED or CANCELLED, or ``timeout`` seconds pass."""
        stop_at = self.clock() + timeout
        while True:
            tasks = self.sqs.list_message_move_tasks(SourceArn=self.dlq_arn, MaxResults=1).get("Results", [])
            if not tasks:
                raise ApilakeError(f"SQS lists no message move task for {self.dlq_arn} (started: {handle})")
            task = tasks[0]
            status = task["Status"]
            if status in MOVE_TASK_DONE or self.clock() >= stop_at:
                return MoveResult(
                    method="move_task",
                    status=status,
                    moved=int(task.get("ApproximateNumberOfMessagesMoved", 0)),
                    to_move=task.get("ApproximateNumberOfMessagesToMove"),
                    task_handle=handle,
                    failure_reason=task.get("FailureReason"),
                    timed_out=status not in MOVE_TASK_DONE,
                )
            self.sleep(interval)


def move_back(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    per_second: int | None = None,
    wait: bool = True,
    timeout: float = 900,
    interval: float = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> MoveResult:
    """The DLQ's messages back to the queue with SQS's move task (waiting for it unless ``wait`` is False);
    copied by hand (:func:`redrive`) only where the endpoint has no move task API."""
    dlq_arn, queue_arn = (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for url in (dlq_url, queue_url)
    )
    task = MoveTask(sqs, dlq_arn, queue_arn, sleep=sleep)
    try:
        handle = task.start(per_second)
    except ClientError as exc:
        if not move_task_unavailable(exc):
            raise
        return MoveResult(method="copy", status="COMPLETED", moved=redrive(sqs, dlq_url, queue_url))
    if not wait:
        return MoveResult(method="move_task", status="RUNNING", moved=0, task_handle=handle)
    return task.wait(handle, timeout, interval)
