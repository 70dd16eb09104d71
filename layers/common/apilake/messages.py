"""The work item: one page of one source, as it travels through SQS."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

from datetime import date, datetime
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Json, StringConstraints, model_validator

from apilake.config import SourceName

MAX_PAGES_PER_SHARD = 99_999  # keys carry the page as five digits

# Every field that reaches an S3 key is constrained to characters that cannot form a path.
RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# "all", a day, an incremental run's window (apilake.incremental: since-<value>[_until-<value>]), or a child
# source's shard: its parent values' slug and hash (apilake.children.child_shard: p-[<slug>-]<16 hex digits>).
ShardName = Annotated[
    str,
    StringConstraints(
        pattern=r"^(all|\d{4}-\d{2}-\d{2}|since-[0-9A-Za-z.+-]{1,40}(_until-[0-9A-Za-z.+-]{1,40})?"
        r"|p-([a-z0-9-]{1,40}-)?[0-9a-f]{16})$"
    ),
]
CHILD_SHARD_PREFIX = "p-"
# A child source's work item: each placeholder -> its value in the parent record (apilake.children).
PARENT_VALUE_CHARS = 512
ParentValues = dict[
    Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")],
    Annotated[str, StringConstraints(max_length=PARENT_VALUE_CHARS)],
]


MAX_CURSOR_CHARS = 4096  # the longest cursor (or next URL) a work item carries


class Parking(BaseModel):
    """How long a page has waited in its queue for the vendor: a long ``Retry-After`` re-sends the
    message with a delay (at most 15 minutes a hop), not before ``until``; ``count`` hops since ``since``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1)
    since: AwareDatetime
    until: AwareDatetime


class WorkItem(BaseModel):
    """What a worker needs to fetch one page and land it under its deterministic key.

    Fields added later are optional and left out of the message while unset, so that messages
    written before them still parse, and an unparked message is what it always was."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    run_id: RunId
    source: SourceName
    ingestion_date: date
    shard: ShardName
    page: int = Field(ge=1, le=MAX_PAGES_PER_SHARD)
    # Chain styles only: the cursor (cursor style) or the absolute URL (next_url, link_header) of this page.
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CURSOR_CHARS)] | None = None
    # Fan-out styles only: the page size the vendor really uses, when it caps the configured one (the planner
    # learns it from its probe, apilake.pagination.FanOut); unset, the configured size.
    page_size: int | None = Field(default=None, ge=1, exclude_if=lambda size: size is None)
    # Set while the page waits out a vendor's Retry-After in the queue (see PageIngester).
    park: Parking | None = Field(default=None, exclude_if=lambda park: park is None)
    # A child source's page: the values its parent record gave the placeholders of its path and params.
    parent_values: ParentValues | None = Field(
        default=None, min_length=1, max_length=8, exclude_if=lambda values: values is None
    )

    @model_validator(mode="after")
    def _child_shard(self) -> Self:
        if self.shard.startswith(CHILD_SHARD_PREFIX) != (self.parent_values is not None):
            raise ValueError("a child source's shard (p-...) and parent_values go together")
        return self

    def next(self, cursor: str | None) -> "WorkItem":
        """The chain's next page (validated: a chain cannot grow past the pages a shard may hold), not parked."""
        return WorkItem.model_validate({**self.model_dump(), "page": self.page + 1, "cursor": cursor, "park": None})

    def parked(self, until: datetime, now: datetime) -> Self:
        """This page parked once more, not before ``until``: the count raised, the first park's time kept."""
        since = self.park.since if self.park else now
        count = self.park.count + 1 if self.park else 1
        return self.model_copy(update={"park": Parking(count=count, since=since, until=until)})


class SqsAttributes(BaseModel):
    """The system attributes of an SQS record that Lambda always sends (others are ignored)."""

    ApproximateReceiveCount: str
    ApproximateFirstReceiveTimestamp: datetime
    SenderId: str
    SentTimestamp: datetime


class SqsMessageAttribute(BaseModel):
    dataType: str  # noqa: N815 - the SQS record's own names
    stringValue: str | None = None  # noqa: N815
    binaryValue: str | None = None  # noqa: N815


class WorkItemRecord(BaseModel):
    """An SQS record, as Lambda's event source mapping hands it over, whose body is a JSON work item (validated
    by apilake.batch). The fields Powertools' ``SqsRecordModel`` requires, without importing its parser."""

    messageId: str  # noqa: N815 - the SQS record's own names
    receiptHandle: str  # noqa: N815
    body: Json[WorkItem]
    attributes: SqsAttributes
    messageAttributes: dict[str, SqsMessageAttribute]  # noqa: N815
    eventSource: Literal["aws:sqs"]  # noqa: N815
    eventSourceARN: str  # noqa: N815
    awsRegion: str  # noqa: N815
