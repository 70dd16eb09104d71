"""The local stand-ins' own behaviour: the fake vendor's rate limit, the moto SQS patch."""

from __future__ import annotations

import json
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
