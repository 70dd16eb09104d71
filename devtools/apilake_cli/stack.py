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
from apilake.report import DLQ_DEPTH_ATTRIBUTES

PLANNER_FUNCTION = "PlannerFunctionName"
LAKE_BUCKET = "LakeBucketName"
STAGE = "StageName"
ATHENA_WORKGROUP = "AthenaWorkGroupName"
GLUE_DATABASE = "GlueDatabaseName"

# A queue's depth, one definition for every command and the run report (apilake.report's): the messages
# waiting, received and not yet deleted (in flight), and delayed (a parked page waits as a delayed message).
VISIBLE, IN_FLIGHT, DELAYED = DLQ_DEPTH_ATTRIBUTES


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

    def as_dict(self) -> dict[str, int]:
        return {"visible": self.visible, "in_flight": self.in_flight, "delayed": self.delayed, "total": self.total}


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
        url = self.find_queue_url(source, dead_letter)
        if url is None:
            name = (dlq_name if dead_letter else queue_name)(self.stage, source)
            raise ApilakeError(
                f"stack {self.name} has no source {source!r}: no queue {name} in {self.session.region_name}"
            )
        return url

    def find_queue_url(self, source: str, dead_letter: bool = False) -> str | None:
        """The URL of the source's queue (or dead-letter queue), by its name; None when there is no such queue
        (a source removed from the stack since an old run)."""
        name = (dlq_name if dead_letter else queue_name)(self.stage, source)
        try:
            url: str = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except self.sqs.exceptions.QueueDoesNotExist:
            return None
        return url

    def queue_arn(self, url: str) -> str:
        arn: str = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return arn

    def depth(self, url: str) -> QueueDepth:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(DLQ_DEPTH_ATTRIBUTES))
        counts = {name: int(attributes["Attributes"].get(name, 0)) for name in DLQ_DEPTH_ATTRIBUTES}
        return QueueDepth(visible=counts[VISIBLE], in_flight=counts[IN_FLIGHT], delayed=counts[DELAYED])

    def dlq_depths(self, sources: list[str]) -> dict[str, int | None]:
        """Messages in each source's dead-letter queue, of every run (the queue's :attr:`QueueDepth.total`);
        None where the source has no DLQ any more (removed from the stack since the run)."""
        urls = {source: self.find_queue_url(source, dead_letter=True) for source in sources}
        return {source: None if url is None else self.depth(url).total for source, url in urls.items()}
