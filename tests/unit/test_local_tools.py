"""The local stand-ins' own behaviour: the fake vendor's rate limit, the moto SQS patches."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from moto import mock_aws

from apilake_dev.local.aws import MOTO_ORIGINALS, LazyQueueAttributes, patch_moto_sqs
from apilake_dev.vendors.fake import Dataset, FakeVendor


def test_the_fake_vendor_answers_429_beyond_its_rate_limit_and_counts_both() -> None:
    # Given a dataset limited to 5 requests in any second
    with FakeVendor([Dataset("ds", total=10)], rate_limits={"ds": 5}) as vendor:
        with requests.Session() as session:
            # When 8 requests come at once
            statuses = [session.get(f"{vendor.base_url}/single/ds", timeout=5).status_code for _ in range(8)]
        # Then the first 5 are answered, the other 3 get 429 with Retry-After, and both are counted
        assert statuses == [200] * 5 + [429] * 3
        assert len(vendor.state.served_at["ds"]) == 5 and vendor.state.limited["ds"] == 3


def test_a_dataset_without_a_limit_is_never_throttled() -> None:
    with FakeVendor([Dataset("ds", total=10)], rate_limits={"other": 1}) as vendor, requests.Session() as session:
        assert {session.get(f"{vendor.base_url}/single/ds", timeout=5).status_code for _ in range(5)} == {200}


def _queue(**attributes: str) -> Any:
    """A moto queue made through the API (next to a DLQ it may name), as moto keeps it."""
    import boto3
    from moto.sqs.models import sqs_backends

    sqs: Any = boto3.client("sqs", region_name="us-east-1")
    sqs.create_queue(QueueName="d")
    fifo = attributes.get("FifoQueue") == "true"
    name = "q.fifo" if fifo else "q"
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m", **({"MessageGroupId": "g"} if fifo else {}))
    return sqs_backends["123456789012"]["us-east-1"].queues[name]


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"VisibilityTimeout": "60", "DelaySeconds": "2"},
        {"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        {"KmsMasterKeyId": "alias/lake"},
        {
            "Policy": json.dumps({"Version": "2012-10-17", "Statement": []}),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:d", "maxReceiveCount": 8}
            ),
        },
    ],
    ids=["defaults", "timeouts", "fifo", "kms", "policies"],
)
@mock_aws
def test_lazy_queue_attributes_are_the_ones_moto_computes(attributes: dict[str, str]) -> None:
    # Given moto's queue attributes replaced by lazy ones, and a queue
    patch_moto_sqs()
    original = MOTO_ORIGINALS["Queue.attributes"]
    queue = _queue(**attributes)
    # Then they have the same keys and values as moto's own
    assert isinstance(queue.attributes, LazyQueueAttributes)
    assert dict(queue.attributes) == original.fget(queue)


def _in_flight(sqs: Any, url: str, count: int) -> list[str]:
    """``count`` messages sent to ``url`` and received (in flight for 30 minutes): their receipt handles."""
    for index in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{index}")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, VisibilityTimeout=1800)["Messages"]
    assert len(messages) == count
    return [message["ReceiptHandle"] for message in messages]


@mock_aws
def test_two_deletes_at_once_both_hold() -> None:
    # Given moto patched as the local emulator runs it, and two messages in flight
    import boto3
    from moto.sqs.models import sqs_backends

    patch_moto_sqs()
    sqs: Any = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    first, second = _in_flight(sqs, url, 2)
    backend = sqs_backends["123456789012"]["us-east-1"]
    in_first_delete, second_deleted = threading.Event(), threading.Event()
    later = next(m for m in backend.queues["q"]._messages if m.had_receipt_handle(second))
    checks = later.had_receipt_handle

    def slow_check(handle: str) -> bool:
        # The first delete, passing the second message, waits until the second delete is done
        # (or a second: one at a time, the second delete cannot be done before the first)
        if handle == first:
            in_first_delete.set()
            second_deleted.wait(timeout=1)
        return bool(checks(handle))

    later.had_receipt_handle = slow_check  # type: ignore[method-assign,assignment]
    # When each message is deleted by a request of its own, at the same time (moto's server threads)
    delete_first = threading.Thread(
        target=backend.delete_message_batch, args=("q", [{"Id": "1", "ReceiptHandle": first}])
    )
    delete_first.start()
    assert in_first_delete.wait(timeout=5)
    _, failed = backend.delete_message_batch("q", [{"Id": "2", "ReceiptHandle": second}])
    second_deleted.set()
    delete_first.join(timeout=5)
    # Then both are gone: neither delete put the other's message back (in flight for 30 minutes)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert failed == []
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


@mock_aws
def test_a_long_poll_does_not_hold_up_the_queue() -> None:
    # Given moto patched, and a receive waiting up to 5 s on an empty queue
    import boto3
    from moto.sqs.models import sqs_backends

    patch_moto_sqs()
    sqs: Any = boto3.client("sqs", region_name="us-east-1")
    sqs.create_queue(QueueName="q")
    backend = sqs_backends["123456789012"]["us-east-1"]
    received: list[Any] = []
    receive = threading.Thread(target=lambda: received.extend(backend.receive_message("q", 10, 5, 30)))
    receive.start()
    time.sleep(0.3)
    # When a message is sent meanwhile
    started = time.monotonic()
    backend.send_message("q", "m")
    receive.join(timeout=10)
    # Then the send did not wait for the receive to give up, and the receive got the message
    assert time.monotonic() - started < 2.5
    assert [message.body for message in received] == ["m"]
