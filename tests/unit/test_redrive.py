"""`apilake redrive`: a source's DLQ goes back to its queue, by explicit URLs or a stack's resources."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake_cli.main import main
from apilake_cli.redrive import peek

# A stack with api-a's queues as template.yaml names them, and no outputs for them.
STACK = {"Resources": {"ApiAQueue": {"Type": "AWS::SQS::Queue"}, "ApiADeadLetterQueue": {"Type": "AWS::SQS::Queue"}}}


def bodies(sqs: Any, url: str) -> list[str]:
    return sorted(m["Body"] for m in peek(sqs, url))


def stack_queues(region: str) -> tuple[str, str]:
    """The stack created, and the URLs of api-a's queue and dead-letter queue."""
    cloudformation = boto3.client("cloudformation", region_name=region)
    cloudformation.create_stack(StackName="apilake-dev", TemplateBody=json.dumps(STACK))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName="apilake-dev")["StackResources"]
    }
    return resources["ApiAQueue"], resources["ApiADeadLetterQueue"]


@mock_aws
@pytest.mark.parametrize("by_stack", [False, True], ids=["explicit URLs", "stack resources"])
def test_redrive_moves_every_dlq_message_back_to_its_queue(by_stack: bool, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a source whose DLQ, in a stack in another region than the default, holds 23 messages (more
    # than one receive's worth)
    queue, dlq = stack_queues("eu-west-1")
    sqs = boto3.client("sqs", region_name="eu-west-1")
    sent = [json.dumps({"page": n}) for n in range(23)]
    for body in sent:
        sqs.send_message(QueueUrl=dlq, MessageBody=body)
    # When it is redriven
    where = (
        ["--stack-name", "apilake-dev", "--source", "api-a"] if by_stack else ["--queue-url", queue, "--dlq-url", dlq]
    )
    assert main(["redrive", *where, "--region", "eu-west-1"]) == 0
    # Then every message is in the queue, none left in the DLQ
    moved = "api-a: moved 23 message(s)" if by_stack else f"moved 23 message(s) from {dlq} back to {queue}"
    assert moved in capsys.readouterr().out
    assert bodies(sqs, queue) == sorted(sent)
    assert bodies(sqs, dlq) == []


@mock_aws
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--stack-name", "apilake-dev", "--source", "api-z"],
            "stack apilake-dev has no source 'api-z' (no resource ApiZQueue: ",
        ),
        (
            ["--stack-name", "apilake-prod", "--source", "api-a"],
            "stack apilake-prod has no source 'api-a' (no resource ApiAQueue: ",
        ),
        (["--stack-name", "apilake-dev"], "--stack-name needs --source"),
        (["--queue-url", "https://q"], "give --stack-name and --source, or both --queue-url and --dlq-url"),
        (["--stack-name", "apilake-dev", "--source", "api-a", "--queue-url", "https://q"], "not both"),
    ],
    ids=["unknown source", "unknown stack", "no source", "one URL", "both forms"],
)
def test_redrive_names_what_is_missing(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    stack_queues("us-east-1")
    assert main(["redrive", *args]) == 2
    assert error in capsys.readouterr().err
