"""Parent-child sources: the child shard's name, a child's request, the values a parent record gives, and the
fan-out of a landed parent page, claimed once however often the page is delivered."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

import pytest
from pydantic import TypeAdapter

from apilake.children import METADATA_VALUE_CHARS, announced, bind, child_shard, parent_values
from apilake.config import SourcesFile, parse_sources
from apilake.exceptions import BadResponseError, ConfigError, InvalidMessageError
from apilake.ingest import ItemSender, PageIngester
from apilake.messages import ShardName, WorkItem
from apilake.pagination import paginator_for
from apilake.planner import PlanRequest
from apilake.queue import QueueSender
from apilake.settings import WorkerSettings
from tests.unit.fakes import (
    INGESTION,
    NOW,
    RUN,
    FakeClock,
    FakeContext,
    FakeLake,
    FakeLedger,
    FakeSender,
    FakeVendor,
    client_error,
    sqs_record,
)

CHILD_QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/apilake-test-issues"
SOURCES: SourcesFile = parse_sources(
    {
        "sources": [
            {
                "name": "repos",
                "base_url": "https://api.github.com",
                "path": "/user/repos",
                "records_path": "",
                "pagination": {"type": "page_number", "page_size": 2},
            },
            {
                "name": "issues",
                "base_url": "https://api.github.com",
                "path": "/repos/{owner}/{repo}/issues",
                "params": {"state": "all", "q": "repo:{owner}/{repo}"},
                "records_path": "",
                "pagination": {"type": "link_header"},
                "parent": {"source": "repos", "fields": {"owner": "owner.login", "repo": "name"}},
            },
        ]
    },
    "sources.yaml",
)
ISSUES = SOURCES.get("issues")
SHARD_NAME: TypeAdapter[str] = TypeAdapter(ShardName)


def repo(owner: Any, name: Any) -> dict[str, Any]:
    return {"name": name, "owner": {"login": owner}}


def parent_item(page: int = 1) -> WorkItem:
    return WorkItem(run_id=RUN, source="repos", ingestion_date=INGESTION, shard="all", page=page)


# -- the child shard's name ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"owner": "octocat", "repo": "Hello-World"}, r"p-octocat-hello-world-[0-9a-f]{16}"),
        ({"owner": "dotted.owner", "repo": "socket.io"}, r"p-dotted-owner-socket-io-[0-9a-f]{16}"),
        ({"id": "12345"}, r"p-12345-[0-9a-f]{16}"),
        ({"name": "日本語"}, r"p-[0-9a-f]{16}"),  # nothing readable left: the hash alone
        ({"name": "x" * 300}, r"p-x{40}-[0-9a-f]{16}"),
        ({"name": "--a--"}, r"p-a-[0-9a-f]{16}"),
    ],
)
def test_a_child_shard_is_a_readable_slug_and_a_hash_a_shard_name_accepts(values: dict[str, str], pattern: str) -> None:
    shard = child_shard(values)
    assert re.fullmatch(pattern, shard), shard
    assert SHARD_NAME.validate_python(shard) == shard
    assert child_shard(dict(values)) == shard  # the same values, the same shard


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"owner": "Octocat", "repo": "x"}, {"owner": "octocat", "repo": "x"}),  # the same slug, case apart
        ({"owner": "a-b", "repo": "c"}, {"owner": "a", "repo": "b-c"}),  # the same slug, split apart
        ({"owner": "a/b", "repo": "c"}, {"owner": "a", "repo": "b/c"}),
        ({"owner": "a", "repo": "b"}, {"owner": "b", "repo": "a"}),
    ],
)
def test_values_that_differ_give_shards_that_differ(one: dict[str, str], other: dict[str, str]) -> None:
    assert child_shard(one) != child_shard(other)


# -- the child's request ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("owner", "name", "path", "q"),
    [
        ("octocat", "Hello-World", "/repos/octocat/Hello-World/issues", "repo:octocat/Hello-World"),
        ("dotted.owner", "socket.io", "/repos/dotted.owner/socket.io/issues", "repo:dotted.owner/socket.io"),
        # A value is one path segment: a slash in it is encoded, never a segment of its own; the query takes it raw
        ("a/b", "../admin", "/repos/a%2Fb/..%2Fadmin/issues", "repo:a/b/../admin"),
        ("with space", "é?#", "/repos/with%20space/%C3%A9%3F%23/issues", "repo:with space/é?#"),
    ],
)
def test_a_child_request_fills_each_placeholder_as_one_path_segment(owner: str, name: str, path: str, q: str) -> None:
    (item,) = announced(parent_item(), ISSUES, [repo(owner, name)])
    request = paginator_for(bind(ISSUES, item)).request(item)
    assert request.url == "https://api.github.com" + path
    assert request.params == {"state": "all", "q": q}


def test_a_child_message_without_its_parent_values_is_refused() -> None:
    item = WorkItem(run_id=RUN, source="issues", ingestion_date=INGESTION, shard="all", page=1)
    with pytest.raises(InvalidMessageError, match=r"needs the values of owner, repo; the message carries none"):
        bind(ISSUES, item)


def test_a_source_that_is_no_child_is_asked_for_as_it_is() -> None:
    assert bind(SOURCES.get("repos"), parent_item()) is SOURCES.get("repos")


# -- the values of a parent record -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"name": "x"}, r"record 3 of page 1 has no value at 'owner\.login' for \{owner\} of child source 'issues'"),
        (repo(None, "x"), r"has no value at 'owner\.login'"),
        (repo(["a"], "x"), r"holds a list, not a value at 'owner\.login'"),
        (repo({"a": 1}, "x"), r"holds a JSON object, not a value"),
        (repo("a", ""), r"holds '', which cannot be a path segment at 'name' for \{repo\}"),
        (repo("a", ".."), r"holds '\.\.', which cannot be a path segment"),
        (repo("a", "x" * 513), r"holds 513 characters, more than the 512 a work item carries"),
        ("not an object", r"has no value .* \(the record is not a JSON object\)"),
    ],
)
def test_a_parent_record_without_usable_values_is_a_bad_response(record: Any, message: str) -> None:
    with pytest.raises(BadResponseError, match=message):
        parent_values(ISSUES, record, "record 3 of page 1")


def test_numbers_and_booleans_are_sent_as_text() -> None:
    assert parent_values(ISSUES, repo(42, True), "record 1") == {"owner": "42", "repo": "true"}


def test_a_page_announces_each_child_shard_once_in_record_order() -> None:
    records = [repo("a", "x"), repo("b", "y"), repo("a", "x")]
    items = announced(parent_item(page=3), ISSUES, records)
    assert [item.parent_values for item in items] == [{"owner": "a", "repo": "x"}, {"owner": "b", "repo": "y"}]
    assert {(item.source, item.page, item.run_id) for item in items} == {("issues", 1, RUN)}
    assert announced(parent_item(), ISSUES, []) == []


# -- the fan-out of a landed parent page -----------------------------------------------------------------------
class ParentWorker:
    """The repos' worker container over the fakes, its child's queue known (or the issues' worker's)."""

    def __init__(self, sender: ItemSender | None = None) -> None:
        self.clock = FakeClock(NOW)
        self.vendor, self.lake, self.sender = FakeVendor(), FakeLake(), FakeSender()
        self.ledger = FakeLedger(self.clock)
        self.item_sender: ItemSender = self.sender if sender is None else sender
        self.sources = SOURCES

    def run(self, *items: WorkItem, child_queues: dict[str, str] | None = None, source: str = "repos") -> list[int]:
        settings = WorkerSettings(
            source=source,
            lake_bucket="lake",
            queue_url="https://sqs/repos",
            continuation_stale_seconds=300,
            child_queue_urls={"issues": CHILD_QUEUE} if child_queues is None else child_queues,
        )
        ingester = PageIngester(
            settings, self.sources, self.vendor, self.lake, self.ledger, self.item_sender, self.clock
        )
        event = {"Records": [sqs_record(f"m{i}", work) for i, work in enumerate(items)]}
        response = ingester.process(event, FakeContext())
        by_id = {f"m{i}": work.page for i, work in enumerate(items)}
        return [by_id[str(failure["itemIdentifier"])] for failure in response["batchItemFailures"]]

    def children_sent(self) -> list[str]:
        return [item.shard for url, item in self.sender.sent if url == CHILD_QUEUE]


@pytest.fixture
def worker() -> ParentWorker:
    worker = ParentWorker()
    worker.vendor.answer("page=1&per_page=2", [repo("a", "x"), repo("b", "y")])
    worker.vendor.answer("page=2&per_page=2", [])
    return worker


def test_a_landed_parent_page_sends_one_child_item_per_record_and_notes_them(worker: ParentWorker) -> None:
    assert worker.run(parent_item()) == []
    shards = [child_shard({"owner": "a", "repo": "x"}), child_shard({"owner": "b", "repo": "y"})]
    assert worker.children_sent() == shards
    ((_, stored),) = [(key, claim) for key, claim in worker.ledger.children.items() if key[0] == "issues"]
    assert stored[0].state == "sent" and stored[1] == shards


def test_a_redelivered_parent_page_sends_its_children_once(worker: ParentWorker) -> None:
    worker.run(parent_item())
    worker.run(parent_item())
    worker.run(parent_item(), parent_item())  # twice in one batch, too
    assert len(worker.children_sent()) == 2
    assert len(worker.lake.objects) == 1


def test_a_parent_page_without_records_announces_nothing_and_claims_nothing(worker: ParentWorker) -> None:
    assert worker.run(parent_item(page=2)) == []
    assert worker.children_sent() == [] and worker.ledger.children == {}


def test_a_claim_another_delivery_holds_is_left_to_it_until_it_is_stale(worker: ParentWorker) -> None:
    # Given a delivery that claimed the children and died before sending them
    worker.ledger.claim_children(parent_item(), "issues", ["p-x-0000000000000000"])
    # When the page comes back at once, it fails (to come back later) without sending anything
    assert worker.run(parent_item()) == [1]
    assert worker.children_sent() == []
    # And once the claim is older than a worker's timeout, the children are sent, once
    worker.clock.advance(301)
    assert worker.run(parent_item()) == []
    worker.run(parent_item())
    assert len(worker.children_sent()) == 2


def test_a_send_that_fails_releases_the_claim_so_the_retry_sends(worker: ParentWorker) -> None:
    worker.sender.broken = client_error("SendMessage")
    assert worker.run(parent_item()) == [1]
    assert worker.ledger.children == {} and worker.ledger.landed_pages() == []
    worker.sender.broken = None
    assert worker.run(parent_item()) == []
    assert len(worker.children_sent()) == 2 and worker.ledger.landed_pages() == [1]


def test_a_bad_parent_record_fails_the_page_before_anything_is_written(worker: ParentWorker) -> None:
    worker.vendor.answer("page=1&per_page=2", [repo("a", "x"), {"name": "no owner"}])
    assert worker.run(parent_item()) == [1]
    assert worker.lake.objects == {} and worker.children_sent() == []
    assert "record 2 of page 1 has no value at 'owner.login'" in worker.ledger.failures[1]["reason"]


def test_a_parent_worker_without_its_child_s_queue_fails_the_page_naming_it(worker: ParentWorker) -> None:
    assert worker.run(parent_item(), child_queues={}) == [1]
    assert worker.lake.objects == {}
    assert (
        "no queue URL for its child source 'issues' (APILAKE_CHILD_QUEUE_URLS)" in worker.ledger.failures[1]["reason"]
    )


# -- a parent page's children in batches (SendMessageBatch) ---------------------------------------------------
class FakeSqs:
    """SQS as QueueSender calls it: each call's name; the entries whose body holds a shard of ``failing`` fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bodies: list[tuple[str, str]] = []  # (queue URL, message body) of each message taken
        self.failing: set[str] = set()

    def send_message(self, **call: Any) -> dict[str, Any]:
        self.calls.append("SendMessage")
        self.bodies.append((call["QueueUrl"], call["MessageBody"]))
        return {}

    def send_message_batch(self, **call: Any) -> dict[str, Any]:
        self.calls.append("SendMessageBatch")
        failed = []
        for entry in call["Entries"]:
            if any(shard in entry["MessageBody"] for shard in self.failing):
                failed.append(
                    {"Id": entry["Id"], "Code": "InternalError", "Message": "try again", "SenderFault": False}
                )
            else:
                self.bodies.append((call["QueueUrl"], entry["MessageBody"]))
        return {"Successful": [], "Failed": failed}

    def child_shards(self) -> list[str]:
        return [WorkItem.model_validate_json(body).shard for url, body in self.bodies if url == CHILD_QUEUE]


REPOS_25 = [repo("o", f"r{index}") for index in range(25)]
SHARDS_25 = [child_shard({"owner": "o", "repo": f"r{index}"}) for index in range(25)]


def test_a_parent_page_s_children_go_to_their_queue_ten_to_a_call() -> None:
    # Given a page of 25 repos, and the worker sending through SQS
    sqs = FakeSqs()
    worker = ParentWorker(sender=QueueSender(sqs))
    worker.vendor.answer("page=1&per_page=2", REPOS_25)
    # When it lands
    assert worker.run(parent_item()) == []
    # Then its 25 children went in 3 SendMessageBatch calls (not 25 SendMessage), the chain's next page in one
    assert sorted(sqs.calls) == ["SendMessage", *["SendMessageBatch"] * 3]
    assert sorted(sqs.child_shards()) == sorted(SHARDS_25)


def test_a_batch_partly_unsent_releases_the_claim_and_the_redelivery_sends_every_child_again() -> None:
    # Given SQS refusing one of the 25 children every time
    sqs = FakeSqs()
    worker = ParentWorker(sender=QueueSender(sqs))
    worker.vendor.answer("page=1&per_page=2", REPOS_25)
    sqs.failing = {SHARDS_25[13]}
    # When the page is delivered: it fails (to come back), its claim released, nothing of it recorded
    assert worker.run(parent_item()) == [1]
    assert worker.ledger.children == {} and worker.ledger.landed_pages() == []
    assert "1 of 25 messages not sent" in worker.ledger.failures[1]["reason"]
    # When it comes back and SQS takes every message
    sqs.failing = set()
    assert worker.run(parent_item()) == []
    # Then every child was sent again (24 of them twice: page 1 of the same shard, landing on the same keys)
    assert Counter(sqs.child_shards()) == {shard: 1 if shard == SHARDS_25[13] else 2 for shard in SHARDS_25}
    ((_, stored),) = worker.ledger.children.items()
    assert stored[0].state == "sent" and sorted(stored[1]) == sorted(SHARDS_25)


# -- a child page joined to its parent record ------------------------------------------------------------------
def child_item(values: dict[str, str]) -> WorkItem:
    return WorkItem(
        run_id=RUN, source="issues", ingestion_date=INGESTION, shard=child_shard(values), page=1, parent_values=values
    )


def test_a_child_page_keeps_its_parent_values_in_its_metadata_and_its_landed_marker() -> None:
    # Given a page of issues of octocat/Hello-World
    worker = ParentWorker()
    worker.vendor.answer("q=repo:octocat/Hello-World&state=all", [{"id": 1}, {"id": 2}])
    # When it lands
    assert worker.run(child_item({"repo": "Hello-World", "owner": "octocat"}), source="issues") == []
    # Then its S3 metadata and its landed marker name the parent record's values; its records are as they came
    (stored,) = worker.lake.objects.values()
    assert stored.metadata["parent-values"] == '{"owner":"octocat","repo":"Hello-World"}'
    assert "parent-values-sha256" not in stored.metadata and stored.records == [{"id": 1}, {"id": 2}]
    (((_, details),),) = worker.ledger.landed
    assert details["parent_values"] == {"owner": "octocat", "repo": "Hello-World"}


def test_parent_values_too_long_for_s3_metadata_keep_their_hash_there_and_the_values_in_the_ledger() -> None:
    # Given values whose JSON is longer than S3 metadata takes (2 KB in all), and not ASCII
    values = {"owner": "é" * 300, "repo": "x" * 500}
    worker = ParentWorker()
    worker.vendor.answer(f"q=repo:{values['owner']}/{values['repo']}&state=all", [{"id": 1}])
    assert worker.run(child_item(values), source="issues") == []
    (stored,) = worker.lake.objects.values()
    text = json.dumps(dict(sorted(values.items())), separators=(",", ":"))
    assert len(text) > METADATA_VALUE_CHARS and "parent-values" not in stored.metadata
    assert stored.metadata["parent-values-sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert all(value.isascii() for value in stored.metadata.values())  # what an HTTP header takes
    (((_, details),),) = worker.ledger.landed
    assert details["parent_values"] == values


ISSUES_INCLUDED = ISSUES.model_dump(mode="json", exclude_unset=True)
ISSUES_INCLUDED["parent"]["include"] = True
INCLUDED = parse_sources(
    {"sources": [SOURCES.get("repos").model_dump(mode="json", exclude_unset=True), ISSUES_INCLUDED]}, "sources.yaml"
)
ADDED = {"_parent_owner": "a", "_parent_repo": "7"}


@pytest.mark.parametrize(
    ("records", "landed", "error"),
    [
        (
            [{"id": 1}, {"id": 2, "x": None}],
            [{"id": 1, **ADDED}, {"id": 2, "x": None, **ADDED}],
            None,
        ),
        ([], [], None),
        (
            [{"id": 1}, 3],
            None,
            "record 2 of page 1 of child source 'issues' is not a JSON object: parent.include cannot add "
            "_parent_owner, _parent_repo",
        ),
        (
            [{"id": 1, "_parent_repo": "mine"}],
            None,
            "record 1 of page 1 of child source 'issues' already has _parent_repo, the field parent.include adds",
        ),
    ],
)
def test_parent_include_adds_the_parent_values_to_each_child_record(
    records: list[Any], landed: list[Any] | None, error: str | None
) -> None:
    # Given a child source with parent.include, a page of issues of repo a/7
    worker = ParentWorker()
    worker.sources = INCLUDED
    worker.vendor.answer("q=repo:a/7&state=all", records)
    # When it lands, then each record has _parent_owner and _parent_repo (the values as sent: text), or the page
    # fails when a record cannot take them
    failed = worker.run(child_item({"owner": "a", "repo": "7"}), source="issues")
    if error is None:
        assert failed == [] and [stored.records for stored in worker.lake.objects.values()] == [landed]
    else:
        assert failed == [1] and worker.lake.objects == {} and error in worker.ledger.failures[1]["reason"]


# -- the planner -----------------------------------------------------------------------------------------------
def test_the_planner_never_plans_a_child_itself() -> None:
    scheduled = PlanRequest(run_id="sched-1", ingestion_date=INGESTION, trigger="schedule")
    assert [source.name for source in scheduled.select(SOURCES)] == ["repos"]
    manual = PlanRequest(run_id="manual-1", ingestion_date=INGESTION, trigger="manual")
    assert [source.name for source in manual.select(SOURCES)] == ["repos"]


def test_a_run_of_a_child_by_name_is_refused_naming_its_parent() -> None:
    request = PlanRequest(run_id="manual-1", ingestion_date=INGESTION, trigger="manual", sources=["issues"])
    with pytest.raises(
        ConfigError, match=r"source 'issues' is a child of 'repos': .* run 'repos' \(its children follow\)"
    ):
        request.select(SOURCES)
