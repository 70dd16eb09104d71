"""Small, honest stand-ins for the worker's collaborators: no moto, no sockets.

Each keeps what it was asked in plain lists and dicts, and answers as the real one does on the
paths the worker takes (the conditional create of a claim, an unchanged page not rewritten). Any
of them can be told to fail the way boto3 fails: a ``ClientError``. :class:`Worker` is one source's
worker container made of them, serving two sources: a fan-out one and a chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from apilake.auth import Credentials
from apilake.config import Source, parse_sources
from apilake.http import Deadline
from apilake.ingest import PageIngester
from apilake.lake import WriteResult, encode_page, page_key
from apilake.ledger import Claim, ClaimState
from apilake.messages import WorkItem
from apilake.pagination import PageRequest, VendorPage
from apilake.settings import WorkerSettings


def client_error(operation: str, code: str = "InternalError") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "injected by the test"}}, operation)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeContext(LambdaContext):
    """A Lambda context with plenty of time left."""

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return 300_000


def query_of(request: PageRequest) -> str:
    """How a test names a request: its query string, parameters sorted (``page=3``, ``cursor=c2``, ``""``)."""
    return "&".join(f"{name}={value}" for name, value in sorted(request.params.items()))


class FakeVendor:
    """A vendor API (and the container's vendor clients): each request answered by its query string
    with a document or an error, in the order given; the last answer repeats."""

    def __init__(self) -> None:
        self.credentials = Credentials()
        self.answers: dict[str, list[Any]] = {}
        self.asked: list[str] = []

    def answer(self, query: str, *answers: Any) -> None:
        self.answers[query] = list(answers)

    def for_source(self, source: Source) -> FakeVendor:
        return self

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        query = query_of(request)
        self.asked.append(query)
        if query not in self.answers:
            raise AssertionError(f"the test gave no answer to the request {query!r}")
        answers = self.answers[query]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return VendorPage(document=answer, headers={}, url=request.url, size_bytes=0, latency_ms=0.0)


@dataclass(frozen=True)
class StoredPage:
    sha256: str
    records: list[Any]
    metadata: dict[str, str]


class FakeLake:
    """The raw zone: a page whose content did not change is not rewritten, as LakeWriter does."""

    def __init__(self) -> None:
        self.objects: dict[str, StoredPage] = {}
        self.puts = 0
        self.broken: dict[str, Exception] = {}  # key -> the error its write raises

    def write_page(self, key: str, records: Sequence[Any], metadata: dict[str, str]) -> WriteResult:
        if key in self.broken:
            raise self.broken[key]
        digest, compressed = encode_page(records)
        stored = self.objects.get(key)
        if stored is not None and stored.sha256 == digest:
            return WriteResult(key=key, sha256=digest, records=len(records), bytes_written=0, written=False)
        self.objects[key] = StoredPage(digest, list(records), dict(metadata))
        self.puts += 1
        return WriteResult(key=key, sha256=digest, records=len(records), bytes_written=len(compressed), written=True)


@dataclass
class StoredClaim:
    state: str  # "pending" or "sent", as in the claim object's body
    at: datetime  # the object's LastModified


ClaimKey = tuple[str, str, str, int]  # (source, run, shard, page): what the claim object's key is made of


def claim_key(item: WorkItem) -> ClaimKey:
    return (item.source, item.run_id, item.shard, item.page)


class FakeLedger:
    """The ledger: landed markers per batch, failures, chain ends, continuation claims (created only
    if absent, aged by the clock) and cursors (the first page each led to)."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.landed: list[list[tuple[WorkItem, dict[str, Any]]]] = []  # one entry per batch recorded
        self.failures: dict[int, dict[str, Any]] = {}  # page -> its last failure
        self.ends: list[WorkItem] = []
        self.claims: dict[ClaimKey, StoredClaim] = {}
        self.cursors: dict[tuple[str, str, str, str], int] = {}
        self.broken: dict[str, Exception] = {}  # method name -> the error it raises
        # (child, parent's source, run, shard, page) -> the claim of the child work that page announced, its shards
        self.children: dict[tuple[str, str, str, str, int], tuple[StoredClaim, list[str]]] = {}

    def landed_pages(self) -> list[int]:
        return sorted(item.page for batch in self.landed for item, _ in batch)

    def mark_landed(self, landed: list[tuple[WorkItem, dict[str, Any]]]) -> int:
        self._maybe_fail("mark_landed")
        self.landed.append(list(landed))
        return 1

    def mark_failure(self, item: WorkItem, details: dict[str, Any]) -> None:
        self._maybe_fail("mark_failure")
        self.failures[item.page] = details

    def mark_end(self, item: WorkItem) -> None:
        self._maybe_fail("mark_end")
        self.ends.append(item)

    def claim_continuation(self, next_item: WorkItem) -> ClaimState:
        self._maybe_fail("claim_continuation")
        stored = self.claims.get(claim_key(next_item))
        if stored is None:
            self.claims[claim_key(next_item)] = StoredClaim("pending", self._clock())
            return ClaimState(Claim.CREATED)
        if stored.state == "sent":
            return ClaimState(Claim.SENT)
        return ClaimState(Claim.PENDING, age_seconds=(self._clock() - stored.at).total_seconds())

    def first_page_of_cursor(self, next_item: WorkItem) -> int:
        self._maybe_fail("first_page_of_cursor")
        assert next_item.cursor is not None
        return self.cursors.setdefault(
            (next_item.source, next_item.run_id, next_item.shard, next_item.cursor), next_item.page
        )

    def confirm_continuation(self, next_item: WorkItem) -> None:
        self._maybe_fail("confirm_continuation")
        self.claims[claim_key(next_item)] = StoredClaim("sent", self._clock())

    def release_continuation(self, next_item: WorkItem) -> None:
        self._maybe_fail("release_continuation")
        self.claims.pop(claim_key(next_item), None)

    def claim_children(self, parent: WorkItem, child: str, shards: list[str]) -> ClaimState:
        self._maybe_fail("claim_children")
        key = (child, *claim_key(parent))
        stored = self.children.get(key)
        if stored is None:
            self.children[key] = (StoredClaim("pending", self._clock()), list(shards))
            return ClaimState(Claim.CREATED)
        if stored[0].state == "sent":
            return ClaimState(Claim.SENT)
        return ClaimState(Claim.PENDING, age_seconds=(self._clock() - stored[0].at).total_seconds())

    def confirm_children(self, parent: WorkItem, child: str, shards: list[str]) -> None:
        self._maybe_fail("confirm_children")
        self.children[(child, *claim_key(parent))] = (StoredClaim("sent", self._clock()), list(shards))

    def release_children(self, parent: WorkItem, child: str) -> None:
        self._maybe_fail("release_children")
        self.children.pop((child, *claim_key(parent)), None)

    def _maybe_fail(self, method: str) -> None:
        if method in self.broken:
            raise self.broken[method]


class FakeSender:
    """The worker's queue: what was sent to it, and with what delay (``delays[i]`` is ``sent[i]``'s)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, WorkItem]] = []
        self.delays: list[int] = []
        self.broken: Exception | None = None

    def send_one(self, queue_url: str, item: WorkItem, delay_seconds: int = 0) -> None:
        if self.broken is not None:
            raise self.broken
        self.sent.append((queue_url, item))
        self.delays.append(delay_seconds)

    def send_all(self, queue_url: str, items: Sequence[WorkItem]) -> int:
        if self.broken is not None:
            raise self.broken
        for item in items:
            self.send_one(queue_url, item)
        return len(items)

    def parked(self) -> list[tuple[WorkItem, int]]:
        """The messages sent with a delay (parked copies), each with its delay."""
        return [(item, delay) for (_, item), delay in zip(self.sent, self.delays, strict=True) if delay]

    def undelayed(self) -> list[tuple[str, WorkItem]]:
        """The messages sent without a delay (a chain's next pages)."""
        return [sent for sent, delay in zip(self.sent, self.delays, strict=True) if not delay]


# -- a worker container made of the fakes ----------------------------------------------------------

RUN = "r1"
INGESTION = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/apilake-test"
STALE_SECONDS = 300.0
SOURCES = parse_sources(
    {
        "sources": [
            {
                "name": "fan",  # fan-out: the planner enqueued every page
                "base_url": "https://api.example.com",
                "path": "/items",
                "records_path": "data",
                "pagination": {"type": "page_number", "page_size": 2, "size_param": None, "total_path": "total"},
            },
            {
                "name": "chain",  # a chain: the worker landing page N enqueues page N+1
                "base_url": "https://api.example.com",
                "path": "/events",
                "records_path": "data",
                "pagination": {"type": "cursor", "cursor_path": "next"},
            },
        ]
    },
    "test",
)


def item(source: str, page: int, cursor: str | None = None) -> WorkItem:
    return WorkItem(run_id=RUN, source=source, ingestion_date=INGESTION, shard="all", page=page, cursor=cursor)


def document(page: int, next_cursor: str | None = None) -> dict[str, Any]:
    return {"data": [{"id": page * 10}, {"id": page * 10 + 1}], "total": 10, "next": next_cursor}


def key(work: WorkItem) -> str:
    return page_key(work.source, work.ingestion_date, work.shard, work.page)


@dataclass
class Worker:
    """One source's worker container: each :meth:`run` is one invocation over one SQS batch."""

    source: str
    clock: FakeClock = field(default_factory=lambda: FakeClock(NOW))
    vendor: FakeVendor = field(default_factory=FakeVendor)
    lake: FakeLake = field(default_factory=FakeLake)
    sender: FakeSender = field(default_factory=FakeSender)
    ledger: FakeLedger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = FakeLedger(self.clock)

    def run(self, *items: WorkItem) -> list[int]:
        """Deliver ``items`` as one batch; returns the pages reported failed, in the response's order."""
        settings = WorkerSettings(
            source=self.source,
            lake_bucket="lake",
            queue_url=QUEUE_URL,
            continuation_stale_seconds=STALE_SECONDS,
        )
        ingester = PageIngester(
            settings=settings,
            sources=SOURCES,
            vendors=self.vendor,
            writer=self.lake,
            ledger=self.ledger,
            sender=self.sender,
            clock=self.clock,
        )
        event = {"Records": [sqs_record(f"m{i}", work) for i, work in enumerate(items)]}
        response = ingester.process(event, FakeContext())
        by_id = {f"m{i}": work.page for i, work in enumerate(items)}
        return [by_id[str(failure["itemIdentifier"])] for failure in response["batchItemFailures"]]


def sqs_record(message_id: str, work: WorkItem) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": work.model_dump_json(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1764118800000",
            "SenderId": "123456789012",
            "ApproximateFirstReceiveTimestamp": "1764118800001",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:apilake-test",
        "awsRegion": "us-east-1",
    }
