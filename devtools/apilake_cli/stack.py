"""A deployed apilake stack, found by its name: what its outputs say (one ``DescribeStacks``), and its
sources' queues, found by name (``apilake.names``, with the stage from the output ``StageName``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from apilake.exceptions import ApilakeError
from apilake.ledger import Ledger
from apilake.names import dlq_name, queue_name

PLANNER_FUNCTION = "PlannerFunctionName"
LAKE_BUCKET = "LakeBucketName"
STAGE = "StageName"
ATHENA_WORKGROUP = "AthenaWorkGroupName"
GLUE_DATABASE = "GlueDatabaseName"

DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def new_session(profile: str | None, region: str | None) -> boto3.Session:
    """The AWS session of ``--profile`` and ``--region`` (boto3's defaults when not given)."""
    return boto3.Session(profile_name=profile, region_name=region)


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate message counts: waiting, received and not yet deleted, delayed (parked pages)."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


class Stack:
    def __init__(self, session: boto3.Session, name: str, outputs: dict[str, str]) -> None:
        self.session = session
        self.name = name
        self.outputs = outputs

    @classmethod
    def find(cls, session: boto3.Session, name: str) -> Stack:
        """The stack ``name`` in the session's region; an error naming the stack and the region if there is none."""
        try:
            stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationError":
                raise
            reason = exc.response["Error"].get("Message", "")
            raise ApilakeError(f"no stack {name!r} in {session.region_name}: {reason}") from exc
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return cls(session, name, outputs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Stack:
        return cls.find(new_session(args.profile, args.region), args.stack_name)

    def output(self, key: str) -> str:
        if key not in self.outputs:
            raise ApilakeError(
                f"stack {self.name} has no output {key}: is it an apilake stack, deployed from this release?"
            )
        return self.outputs[key]

    def client(self, service: str, config: Config | None = None) -> Any:
        return self.session.client(service, config=config)  # type: ignore[call-overload]

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    @cached_property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def stage(self) -> str:
        return self.output(STAGE)

    @property
    def bucket(self) -> str:
        return self.output(LAKE_BUCKET)

    def ledger(self) -> Ledger:
        return Ledger(self.s3, self.bucket)

    def queue_url(self, source: str, dead_letter: bool = False) -> str:
        """The URL of the source's queue (or dead-letter queue), by its name."""
        name = (dlq_name if dead_letter else queue_name)(self.stage, source)
        try:
            url: str = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except self.sqs.exceptions.QueueDoesNotExist as exc:
            raise ApilakeError(
                f"stack {self.name} has no source {source!r}: no queue {name} in {self.session.region_name}"
            ) from exc
        return url

    def queue_arn(self, url: str) -> str:
        arn: str = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return arn

    def depth(self, url: str) -> QueueDepth:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES)["Attributes"]
        counts = [int(attributes.get(name, 0)) for name in DEPTH_ATTRIBUTES]
        return QueueDepth(*counts)

    def dlq_depths(self, sources: list[str]) -> dict[str, int]:
        """Messages in each source's dead-letter queue (visible ones: a DLQ has no consumer)."""
        return {source: self.depth(self.queue_url(source, dead_letter=True)).total for source in sources}
