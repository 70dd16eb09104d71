"""`apilake redrive`: SQS's message move task (its request and the wait for it, with botocore's Stubber),
the exit codes of its outcomes, and the one answer that sends it to the copy-by-hand path (moto's server's
own; the copy itself runs against moto's server in tests/integration/test_operate_inspect.py); and how
`dlq peek` receives (long polling) and leaves the messages in place."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import apilake_cli.stack
from apilake_cli.main import main
from apilake_cli.redrive import MoveResult, MoveTask, move_back, move_task_unavailable, peek

REGION = "us-east-1"
ACCOUNT_URL = f"https://sqs.{REGION}.amazonaws.com/123456789012"
QUEUE, DLQ = f"{ACCOUNT_URL}/apilake-dev-api-a", f"{ACCOUNT_URL}/apilake-dev-api-a-dlq"
QUEUE_ARN, DLQ_ARN = (
    f"arn:aws:sqs:{REGION}:123456789012:apilake-dev-api-a",
    f"arn:aws:sqs:{REGION}:123456789012:apilake-dev-api-a-dlq",
)
HANDLE = "eyJ0YXNrSWQiOiIxIn0="


def sqs_client() -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=f"https://sqs.{REGION}.amazonaws.com")


def task(status: str, moved: int, to_move: int = 23, reason: str | None = None) -> dict[str, Any]:
    """A ListMessageMoveTasks result as SQS gives it (a handle only while RUNNING)."""
    found: dict[str, Any] = {
        "Status": status,
        "SourceArn": DLQ_ARN,
        "DestinationArn": QUEUE_ARN,
        "ApproximateNumberOfMessagesMoved": moved,
        "ApproximateNumberOfMessagesToMove": to_move,
        "StartedTimestamp": 1796000000000,
    }
    if status == "RUNNING":
        found["TaskHandle"] = HANDLE
    if reason:
        found["FailureReason"] = reason
    return found


def expect_arns(stubber: Stubber) -> None:
    for url, arn in ((DLQ, DLQ_ARN), (QUEUE, QUEUE_ARN)):
        stubber.add_response(
            "get_queue_attributes", {"Attributes": {"QueueArn": arn}}, {"QueueUrl": url, "AttributeNames": ["QueueArn"]}
        )


def expect_move(stubber: Stubber, per_second: int | None, *tasks: dict[str, Any]) -> None:
    """The move task's start (with SQS's rate only when given), then one ListMessageMoveTasks per task."""
    start = {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN}
    if per_second is not None:
        start["MaxNumberOfMessagesPerSecond"] = per_second  # type: ignore[assignment]
    stubber.add_response("start_message_move_task", {"TaskHandle": HANDLE}, start)
    for found in tasks:
        stubber.add_response("list_message_move_tasks", {"Results": [found]}, {"SourceArn": DLQ_ARN, "MaxResults": 1})


@pytest.mark.parametrize("per_second", [None, 50], ids=["SQS's pace", "50 a second"])
def test_the_move_task_is_started_from_the_dlq_to_its_queue_and_waited_for(per_second: int | None) -> None:
    # Given SQS, whose move task runs for two looks, then completes
    sqs = sqs_client()
    slept: list[float] = []
    with Stubber(sqs) as stubber:
        expect_arns(stubber)
        expect_move(stubber, per_second, task("RUNNING", 0), task("RUNNING", 10), task("COMPLETED", 23))
        # When the DLQ is moved back
        result = move_back(sqs, DLQ, QUEUE, per_second=per_second, interval=5, sleep=slept.append)
        # Then the request named the DLQ as source and its queue as destination (the stubber checked it),
        # the task was looked at until it completed, a look every interval, and what it moved is known
        stubber.assert_no_pending_responses()
    assert slept == [5, 5]
    assert result == MoveResult(method="move_task", status="COMPLETED", moved=23, to_move=23, task_handle=HANDLE)


def test_the_wait_stops_at_the_timeout_with_the_task_still_running() -> None:
    sqs = sqs_client()
    ticks = iter([0.0, 10.0, 20.0])
    with Stubber(sqs) as stubber:
        stubber.add_response("list_message_move_tasks", {"Results": [task("RUNNING", 3)]})
        stubber.add_response("list_message_move_tasks", {"Results": [task("RUNNING", 7)]})
        result = MoveTask(sqs, DLQ_ARN, QUEUE_ARN, clock=lambda: next(ticks), sleep=lambda _: None).wait(
            HANDLE, timeout=15, interval=1
        )
    assert (result.status, result.moved, result.timed_out) == ("RUNNING", 7, True)


# What moto's server (5.x) answers StartMessageMoveTask with, as botocore parses it: an HTML 500 page.
MOTO_NOT_IMPLEMENTED = {
    "Error": {"Code": "500", "Message": "<!doctype html>\n<title>500 Internal Server Error</title>\n"},
    "ResponseMetadata": {"HTTPStatusCode": 500},
}


@pytest.mark.parametrize(
    ("response", "unavailable"),
    [
        (MOTO_NOT_IMPLEMENTED, True),
        ({"Error": {"Code": "InternalError", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, False),
        (
            {"Error": {"Code": "UnsupportedOperation", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            False,
        ),
        ({"Error": {"Code": "ResourceNotFoundException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, False),
        ({"Error": {"Code": "503", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, False),
    ],
    ids=["moto's server", "SQS InternalError", "SQS UnsupportedOperation", "no such queue", "bare 503"],
)
def test_only_an_endpoint_without_the_api_sends_the_messages_the_copy_way(
    response: dict[str, Any], unavailable: bool
) -> None:
    assert move_task_unavailable(ClientError(response, "StartMessageMoveTask")) is unavailable  # type: ignore[arg-type]


def test_an_sqs_error_starting_the_move_is_reported_not_worked_around() -> None:
    # Given SQS refusing the move (the source is not a DLQ, say)
    sqs = sqs_client()
    with Stubber(sqs) as stubber:
        expect_arns(stubber)
        stubber.add_client_error(
            "start_message_move_task", "UnsupportedOperation", "Source queue must be configured as a DLQ", 400
        )
        # Then the error surfaces: no copy by hand (no receive was stubbed, so one would fail differently)
        with pytest.raises(ClientError, match="Source queue must be configured as a DLQ"):
            move_back(sqs, DLQ, QUEUE)


class StubbedSession:
    """The command's AWS session, its CloudFormation and SQS clients stubbed."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients
        self.region_name = REGION

    def client(self, service: str, config: Any = None) -> Any:
        return self.clients[service]


@pytest.mark.parametrize(
    ("tasks", "options", "code", "fields"),
    [
        ([task("COMPLETED", 23)], [], 0, {"status": "COMPLETED", "moved": 23}),
        ([task("FAILED", 4, reason="AccessDenied")], [], 1, {"status": "FAILED", "failure_reason": "AccessDenied"}),
        ([task("CANCELLED", 2)], [], 1, {"status": "CANCELLED", "moved": 2}),
        ([task("RUNNING", 5)], ["--timeout", "0"], 3, {"status": "RUNNING", "timed_out": True}),
        ([], ["--no-wait"], 0, {"status": "RUNNING", "task_handle": HANDLE}),
    ],
    ids=["completed", "failed", "cancelled", "timed out", "no wait"],
)
def test_redrive_exit_codes_and_json(
    tasks: list[dict[str, Any]],
    options: list[str],
    code: int,
    fields: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the stack apilake-dev (stage dev) and SQS's answers to the move
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    sqs = sqs_client()
    outputs = [{"OutputKey": "StageName", "OutputValue": "dev"}]
    stack = {"StackName": "apilake-dev", "CreationTime": "2026-11-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE"}
    with Stubber(cloudformation) as cf_stub, Stubber(sqs) as sqs_stub:
        cf_stub.add_response(
            "describe_stacks", {"Stacks": [{**stack, "Outputs": outputs}]}, {"StackName": "apilake-dev"}
        )
        for name, url in (("apilake-dev-api-a-dlq", DLQ), ("apilake-dev-api-a", QUEUE)):
            sqs_stub.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": name})
        expect_arns(sqs_stub)
        expect_move(sqs_stub, None, *tasks)
        session = StubbedSession({"cloudformation": cloudformation, "sqs": sqs})
        monkeypatch.setattr(apilake_cli.stack, "new_session", lambda profile, region: session)
        # When the source's DLQ is redriven
        assert main(["redrive", "--stack-name", "apilake-dev", "--source", "api-a", "--json", *options]) == code
        sqs_stub.assert_no_pending_responses()
    # Then the exit code says how it ended, and the JSON document says the rest
    document = json.loads(capsys.readouterr().out)
    assert document["method"] == "move_task" and document["source"] == "api-a"
    assert (document["dlq_url"], document["queue_url"]) == (DLQ, QUEUE)
    assert {key: document[key] for key in fields} == fields


def test_peek_receives_with_a_wait_and_leaves_the_messages_in_place() -> None:
    # Given SQS, whose DLQ holds one message (a receive without a wait may answer nothing: it samples servers)
    sqs = sqs_client()
    message = {"MessageId": "m1", "ReceiptHandle": "h1", "Body": "{}"}
    receive = {
        "QueueUrl": DLQ,
        "MaxNumberOfMessages": 10,
        "VisibilityTimeout": 30,
        "WaitTimeSeconds": 1,
        "AttributeNames": ["All"],
    }
    with Stubber(sqs) as stubber:
        # When the DLQ is peeked at: receives with a wait until one answers nothing, the seen ones hidden meanwhile
        stubber.add_response("receive_message", {"Messages": [message]}, receive)
        hidden = {"QueueUrl": DLQ, "Entries": [{"Id": "0", "ReceiptHandle": "h1", "VisibilityTimeout": 30}]}
        stubber.add_response("change_message_visibility_batch", {"Successful": [{"Id": "0"}], "Failed": []}, hidden)
        stubber.add_response("receive_message", {}, receive)
        # Then each message seen is made visible again at once
        shown = {"QueueUrl": DLQ, "Entries": [{"Id": "0", "ReceiptHandle": "h1", "VisibilityTimeout": 0}]}
        stubber.add_response("change_message_visibility_batch", {"Successful": [{"Id": "0"}], "Failed": []}, shown)
        assert peek(sqs, DLQ) == [message]
        stubber.assert_no_pending_responses()
