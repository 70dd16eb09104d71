"""Moving a DLQ's messages back to their queue, and looking at a DLQ without consuming it."""

from __future__ import annotations

from typing import Any

PEEK_VISIBILITY_SECONDS = 30


def peek(sqs: Any, dlq_url: str) -> list[dict[str, Any]]:
    """Every message in the queue, left in it (visible again at once)."""
    found: dict[str, dict[str, Any]] = {}
    while batch := sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=PEEK_VISIBILITY_SECONDS, AttributeNames=["All"]
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
            raise RuntimeError(f"{len(failed)} message(s) could not be moved back: {failed[0].get('Message')}")
    return moved
