"""The local SQS event source and drain: a delete SQS fails is retried and logged, a drain waiting on
messages in flight says which source, how many and until when."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake_dev.local import event_source
from apilake_dev.local.aws import LocalDeployment, WorkerSpec
from apilake_dev.local.containers import ContainerReport, InFlightWait, LocalEventSources, QueueCounts
from apilake_dev.local.event_source import PollStats, SqsEventSource
from apilake_dev.local.run import describe_wait

URL = "http://sqs.local/123456789012/q"


@dataclass
class FlakySqs:
    """An SQS client whose DeleteMessageBatch fails the given receipt handles, ``times`` times each."""

    failures: dict[str, dict[str, Any]]
    times: int = 1
    deletes: list[list[str]] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}}

    def receive_message(self, **_: Any) -> dict[str, Any]:
        return {"Messages": [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": "{}"} for i in range(3)]}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        self.deletes.append([entry["ReceiptHandle"] for entry in Entries])
        failed = []
        for entry in Entries:
            handle = entry["ReceiptHandle"]
            if handle in self.failures and self.failed[handle] < self.times:
                self.failed[handle] += 1
                failed.append({"Id": entry["Id"], **self.failures[handle]})
        return {"Failed": failed}


def _no_failures(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@pytest.fixture(autouse=True)
def _no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_source, "DELETE_RETRY_SECONDS", 0.0)


def test_a_delete_that_fails_on_sqs_side_is_retried_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Given a DeleteMessageBatch that fails one entry once, on SQS's side
    sqs = FlakySqs({"h1": {"SenderFault": False, "Code": "InternalError", "Message": "try again"}})
    source = SqsEventSource(sqs, URL, _no_failures, "Worker")
    # When a batch of 3 is handled without failures
    with caplog.at_level(logging.WARNING, logger=event_source.__name__):
        assert source.poll_once() == 3
    # Then the failed entry is sent again, alone, and every message is deleted
    assert sqs.deletes == [["h0", "h1", "h2"], ["h1"]]
    assert (source.stats.deleted, source.stats.delete_retries, source.stats.not_deleted) == (3, 1, 0)
    assert source.stats.in_hand == 0
    # And the failure is in the log, with the message and the reason
    assert "message m1" in caplog.text and "InternalError: try again" in caplog.text and "retrying" in caplog.text


def test_a_delete_sqs_refuses_is_logged_and_counted_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    # Given a DeleteMessageBatch that refuses one entry's receipt handle (the caller's fault: retrying cannot help)
    sqs = FlakySqs({"h2": {"SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "bad handle"}})
    source = SqsEventSource(sqs, URL, _no_failures, "Worker")
    with caplog.at_level(logging.WARNING, logger=event_source.__name__):
        source.poll_once()
    # Then it is not sent again, it is counted as not deleted, and the log says it comes back later
    assert sqs.deletes == [["h0", "h1", "h2"]]
    assert (source.stats.deleted, source.stats.not_deleted) == (2, 1)
    assert "message m2" in caplog.text and "ReceiptHandleIsInvalid" in caplog.text
    assert "comes back after its visibility timeout" in caplog.text


def test_a_delete_failing_every_time_is_given_up_after_the_last_attempt() -> None:
    # Given an entry SQS fails on its side at every attempt
    sqs = FlakySqs({"h0": {"SenderFault": False, "Code": "InternalError", "Message": "down"}}, times=99)
    source = SqsEventSource(sqs, URL, _no_failures, "Worker")
    source.poll_once()
    # Then it is tried DELETE_ATTEMPTS times and counted as not deleted
    assert sqs.deletes == [["h0", "h1", "h2"]] + [["h0"]] * (event_source.DELETE_ATTEMPTS - 1)
    assert (source.stats.deleted, source.stats.not_deleted) == (2, 1)


def _running(containers: LocalEventSources, source: str, name: str) -> None:
    """As if container ``name`` of ``source`` were running."""
    spec = WorkerSpec(source, "Worker", containers.deployment.queues[source], "dlq", 10, 2, 10.0, {})
    containers._processes[f"{source}/{name}"] = (spec, SimpleNamespace(is_alive=lambda: True, exitcode=None))


def _report(source: str, container: str, in_hand: int, last_receive: float) -> ContainerReport:
    return ContainerReport(source, container, PollStats(received=10, in_hand=in_hand, last_receive=last_receive))


@mock_aws
def test_the_drain_says_which_source_waits_on_how_many_messages_in_flight_until_when(tmp_path: Path) -> None:
    # Given a source's queue with 5 messages in flight (visibility timeout 1800 s) and nothing visible,
    # 2 of them in the hands of a running container, 3 left by a container (for their timeout to run out)
    sqs: Any = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="bench", Attributes={"VisibilityTimeout": "1800"})["QueueUrl"]
    for index in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{index}")
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5)["Messages"]) == 5
    deployment = LocalDeployment("lake", "db", queues={"bench": url}, visibility_timeout={"bench": 1800})
    containers = LocalEventSources(deployment, {}, tmp_path)
    received_at = time.time() - 30
    _running(containers, "bench", "0")
    containers.latest[("bench", "0")] = _report("bench", "0", in_hand=2, last_receive=received_at + 10)
    containers.latest[("bench", "1")] = _report("bench", "1", in_hand=0, last_receive=received_at)
    seen: list[tuple[dict[str, QueueCounts], dict[str, InFlightWait]]] = []
    # When it drains for a while
    drained = containers.wait_until_drained(
        sqs, max_seconds=0.5, on_progress=lambda *args: seen.append(args), every=0.1
    )
    # Then it is not drained, and from its second look on it says what it waits on
    assert not drained and len(seen) >= 2
    assert seen[0][0] == {"bench": QueueCounts(visible=0, delayed=0, in_flight=5)}
    assert seen[0][1] == {}
    wait = InFlightWait("bench", count=3, until=received_at + 10 + 1800, visibility_timeout=1800)
    assert all(waits == {"bench": wait} for _, waits in seen[1:])
    # In words: which source, how many, until when
    said = describe_wait(wait)
    assert said.startswith("bench: waiting on 3 messages in flight")
    assert time.strftime("%H:%M:%S", time.localtime(wait.until)) in said and "(1800 s)" in said


@mock_aws
def test_the_drain_does_not_call_messages_in_a_running_container_s_hands_a_wait(tmp_path: Path) -> None:
    # Given 2 messages in flight, both in the hands of a running container
    sqs: Any = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="bench")["QueueUrl"]
    for index in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{index}")
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)
    deployment = LocalDeployment("lake", "db", queues={"bench": url}, visibility_timeout={"bench": 30})
    containers = LocalEventSources(deployment, {}, tmp_path)
    _running(containers, "bench", "0")
    containers.latest[("bench", "0")] = _report("bench", "0", in_hand=2, last_receive=time.time())
    # Then no wait is reported; once that container is gone (crashed), its messages wait
    counts = containers.in_queues(sqs)
    assert containers.in_flight_waits(counts) == {}
    del containers._processes["bench/0"]
    assert containers.in_flight_waits(counts)["bench"].count == 2
