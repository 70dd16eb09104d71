"""The local stand-ins' own behaviour: the fake vendor's rate limit, the moto SQS patches, the env-vars file of
`apilake local up`, and the event fixtures of `sam local invoke -e`."""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from moto import mock_aws

from apilake.completeness import check_time
from apilake.exceptions import ApilakeError
from apilake.messages import WorkItemRecord
from apilake.names import queue_name
from apilake.planner import parse_planner_event
from apilake_cli.develop import add_local_commands, parse_secrets
from apilake_dev import paths
from apilake_dev.local import sam_local
from apilake_dev.local.aws import (
    LOOPBACK,
    MOTO_ORIGINALS,
    LazyQueueAttributes,
    LocalDeployment,
    WorkerSpec,
    patch_moto_sqs,
)
from apilake_dev.local.sam_local import LocalUp, at_endpoint, env_vars, worker_sources
from apilake_dev.template.generate import parse_template
from apilake_dev.vendors.fake import Dataset, FakeVendor
from tests.conftest import load_event


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


# ── `apilake local up`: the env-vars file for `sam local invoke`, the event fixtures ──

ENDPOINT = "http://host.docker.internal:5100"
QUEUE_URL = "http://127.0.0.1:5100/123456789012/apilake-dev-api-a"


def _template(planner: dict[str, str], worker: dict[str, str], shared: dict[str, str]) -> dict[str, Any]:
    """A template of two functions: their own variables, and the Globals' (``shared``)."""

    def function(variables: dict[str, str]) -> dict[str, Any]:
        return {"Type": "AWS::Serverless::Function", "Properties": {"Environment": {"Variables": variables}}}

    return {
        "Globals": {"Function": {"Environment": {"Variables": shared}}},
        "Resources": {
            "Planner": function(planner),
            "ApiAWorker": function(worker),
            "ApiAQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        },
    }


def _deployment() -> LocalDeployment:
    worker = WorkerSpec("api-a", "ApiAWorker", QUEUE_URL, QUEUE_URL + "-dlq", 10, 2, 300, {})
    return LocalDeployment("apilake-dev-lake", "db", queues={"api-a": QUEUE_URL}, workers=[worker], stage="dev")


ALL_SHARED = {
    "APILAKE_AWS_ENDPOINT_URL": "",
    "APILAKE_STAGE": "dev",
    "APILAKE_LAKE_BUCKET": "LakeBucket",
    "APILAKE_SOURCES_FILE": "/opt/python/sources.yaml",
}
WORKER_OWN = {"APILAKE_SOURCE": "api-a", "APILAKE_QUEUE_URL": "ApiAQueue"}
IN_ALL = {
    "APILAKE_AWS_ENDPOINT_URL": ENDPOINT,
    "APILAKE_STAGE": "dev",
    "APILAKE_LAKE_BUCKET": "apilake-dev-lake",
    "APILAKE_SOURCES_FILE": "/opt/python/sources.yaml",
}


@pytest.mark.parametrize(
    ("planner", "worker", "shared", "expected"),
    [
        (
            {},
            WORKER_OWN,
            ALL_SHARED,
            {
                "Planner": IN_ALL,
                "ApiAWorker": {**IN_ALL, "APILAKE_QUEUE_URL": ENDPOINT + "/123456789012/apilake-dev-api-a"},
            },
        ),
        (  # the stage only where a function declares it; nothing for a worker without a queue variable
            {"APILAKE_STAGE": "dev"},
            {"APILAKE_SOURCE": "api-a"},
            {k: v for k, v in ALL_SHARED.items() if k != "APILAKE_STAGE"},
            {
                "Planner": IN_ALL,
                "ApiAWorker": {k: v for k, v in IN_ALL.items() if k != "APILAKE_STAGE"},
            },
        ),
        (  # the bucket and the sources file only where declared
            {"APILAKE_LAKE_BUCKET": "LakeBucket"},
            WORKER_OWN,
            {"APILAKE_AWS_ENDPOINT_URL": "", "APILAKE_STAGE": "dev"},
            {
                "Planner": {
                    "APILAKE_AWS_ENDPOINT_URL": ENDPOINT,
                    "APILAKE_STAGE": "dev",
                    "APILAKE_LAKE_BUCKET": "apilake-dev-lake",
                },
                "ApiAWorker": {
                    "APILAKE_AWS_ENDPOINT_URL": ENDPOINT,
                    "APILAKE_STAGE": "dev",
                    "APILAKE_QUEUE_URL": ENDPOINT + "/123456789012/apilake-dev-api-a",
                },
            },
        ),
    ],
    ids=["globals", "stage-own", "bucket-own"],
)
def test_the_env_vars_file_sets_only_the_variables_each_function_declares(
    planner: dict[str, str], worker: dict[str, str], shared: dict[str, str], expected: dict[str, dict[str, str]]
) -> None:
    # Given a template, when the file is made for a deployment reached at ENDPOINT
    found = env_vars(_template(planner, worker, shared), _deployment(), ENDPOINT, "/opt/python/sources.yaml")
    # Then each function has the stand-in's values of the variables it declares, and no other
    assert found == expected


def test_a_function_without_the_endpoint_variable_is_an_error_naming_it() -> None:
    from apilake.exceptions import ApilakeError

    # Given a worker that does not declare APILAKE_AWS_ENDPOINT_URL (nor do the Globals)
    template = _template({"APILAKE_AWS_ENDPOINT_URL": ""}, WORKER_OWN, {"APILAKE_STAGE": "dev"})
    # Then no file is made: SAM CLI would not pass the variable and the worker would call AWS
    with pytest.raises(ApilakeError, match=r"template.yaml: function ApiAWorker does not declare APILAKE_AWS_ENDPOINT"):
        env_vars(template, _deployment(), ENDPOINT, "/opt/python/sources.yaml")


@pytest.mark.parametrize(
    ("url", "endpoint", "expected"),
    [
        (QUEUE_URL, ENDPOINT, "http://host.docker.internal:5100/123456789012/apilake-dev-api-a"),
        (QUEUE_URL, "http://127.0.0.1:5100", QUEUE_URL),
        ("http://localhost:40123/123456789012/q", "https://aws.local:443", "https://aws.local:443/123456789012/q"),
    ],
)
def test_a_queue_url_is_given_as_seen_from_the_endpoint(url: str, endpoint: str, expected: str) -> None:
    assert at_endpoint(url, endpoint) == expected


def test_local_up_refuses_a_sources_file_the_template_has_no_workers_for(tmp_path: Path) -> None:
    # Given a sources file with one source that template.yaml has no worker for
    document = yaml.safe_load(paths.EXAMPLE_SOURCES.read_text())
    document["sources"] = [{**document["sources"][0], "name": "elsewhere"}]
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump(document))
    template_sources = worker_sources(parse_template(paths.TEMPLATE.read_text()))
    # Then local up stops before starting anything, naming both sides and the fix
    with (
        pytest.raises(
            ApilakeError, match=rf"sources elsewhere, but template.yaml has workers for {template_sources[0]}"
        ) as raised,
        LocalUp(tmp_path / "env.json", sources_file=sources, port=0),
    ):
        pass
    assert "make template" in str(raised.value) and not (tmp_path / "env.json").exists()


def test_the_local_up_options_default_to_the_stand_ins_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_local_commands(parser.add_subparsers())
    args = parser.parse_args(["local", "up"])
    assert (args.port, args.bind, args.endpoint_host) == (
        sam_local.DEFAULT_PORT,
        LOOPBACK,
        sam_local.DEFAULT_ENDPOINT_HOST,
    )
    assert args.sources is None and args.env_vars is None and args.secret == []


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["apilake/api-a=k=1", "b="], {"apilake/api-a": "k=1", "b": ""}),
        (["apilake/api-a"], "--secret 'apilake/api-a': expected NAME=VALUE"),
        (["=value"], "--secret '': expected NAME=VALUE"),
    ],
)
def test_secrets_are_name_equals_value(pairs: list[str], expected: dict[str, str] | str) -> None:
    if isinstance(expected, dict):
        assert parse_secrets(pairs) == expected
    else:
        with pytest.raises(ApilakeError, match=re.escape(expected)):
            parse_secrets(pairs)


def _planner_event(event: dict[str, Any]) -> None:
    parse_planner_event(event)


def _worker_event(event: dict[str, Any]) -> None:
    # Each record is what the worker's batch processor validates, sent from its source's queue (template's stage)
    for record in event["Records"]:
        parsed = WorkItemRecord.model_validate(record)
        assert record["eventSourceARN"].endswith(":" + queue_name("dev", parsed.body.source))


def _completeness_event(event: dict[str, Any]) -> None:
    assert check_time(event) == datetime.fromisoformat(event["time"])


EVENT_FIXTURES = {
    "planner.json": _planner_event,
    "planner-backfill.json": _planner_event,
    "planner-scheduled-sources.json": _planner_event,
    "worker.json": _worker_event,
    "completeness.json": _completeness_event,
}


def test_every_event_fixture_is_checked_for_its_handler() -> None:
    assert sorted(path.name for path in paths.EVENTS.glob("*.json")) == sorted(EVENT_FIXTURES)


@pytest.mark.parametrize("name", sorted(EVENT_FIXTURES))
def test_an_event_fixture_is_valid_for_its_handler(name: str) -> None:
    # Given an event of events/ (what `sam local invoke -e` sends), then its handler's parser accepts it
    EVENT_FIXTURES[name](load_event(name))
