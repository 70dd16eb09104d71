"""`apilake redrive`: a source's DLQ goes back to its queue, by explicit URLs or a stack's outputs."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake_cli.main import main
from apilake_cli.redrive import peek

STACK = {
    "Resources": {"ApiAQueue": {"Type": "AWS::SQS::Queue"}, "ApiADeadLetterQueue": {"Type": "AWS::SQS::Queue"}},
    "Outputs": {
        "ApiAQueueUrl": {"Value": {"Ref": "ApiAQueue"}},
        "ApiADeadLetterQueueUrl": {"Value": {"Ref": "ApiADeadLetterQueue"}},
    },
}


def bodies(sqs: Any, url: str) -> list[str]:
    return sorted(m["Body"] for m in peek(sqs, url))


@mock_aws
@pytest.mark.parametrize("by_stack", [False, True], ids=["explicit URLs", "stack outputs"])
def test_redrive_moves_every_dlq_message_back_to_its_queue(by_stack: bool, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a source whose DLQ holds 23 messages (more than one receive's worth)
    sqs = boto3.client("sqs", region_name="us-east-1")
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(StackName="apilake-dev", TemplateBody=json.dumps(STACK))
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName="apilake-dev")["Stacks"][0]["Outputs"]
    }
    queue, dlq = outputs["ApiAQueueUrl"], outputs["ApiADeadLetterQueueUrl"]
    sent = [json.dumps({"page": n}) for n in range(23)]
    for body in sent:
        sqs.send_message(QueueUrl=dlq, MessageBody=body)
    # When it is redriven
    where = ["--stack-name", "apilake-dev"] if by_stack else ["--queue-url", queue, "--dlq-url", dlq]
    assert main(["redrive", "--source", "api-a", *where]) == 0
    # Then every message is in the queue, none left in the DLQ
    assert "api-a: moved 23 message(s)" in capsys.readouterr().out
    assert bodies(sqs, queue) == sorted(sent)
    assert bodies(sqs, dlq) == []


@mock_aws
def test_redrive_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="apilake-dev", TemplateBody=json.dumps(STACK)
    )
    assert main(["redrive", "--source", "api-z", "--stack-name", "apilake-dev"]) == 2
    assert "stack apilake-dev has no source 'api-z' (no output ApiZQueueUrl)" in capsys.readouterr().err
    assert main(["redrive", "--source", "api-a", "--queue-url", "https://q"]) == 2
    assert "give --stack-name, or both --queue-url and --dlq-url" in capsys.readouterr().err
