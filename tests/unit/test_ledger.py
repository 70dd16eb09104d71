import threading
from datetime import UTC, date, datetime

import boto3
import pytest
from moto import mock_aws

from apilake import ledger as ledger_module
from apilake import ledger_models
from apilake.ledger import ChildOf, Claim, Ledger, RunManifest, ShardPlan, ShardStatus, SourcePlan
from apilake.marks import MarkStore
from apilake.messages import WorkItem

RUN = "r1"


def item(shard: str, page: int) -> WorkItem:
    return WorkItem(run_id=RUN, source="api-a", ingestion_date=date(2026, 11, 26), shard=shard, page=page)


@mock_aws
def test_landed_pages_are_recorded_one_marker_per_shard_and_hundred_pages_and_status_reads_them() -> None:
    # Given a ledger and a run expecting 150 pages in one shard and 3 in another
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    manifest = RunManifest(
        run_id=RUN,
        ingestion_date=date(2026, 11, 26),
        created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
        trigger="schedule",
        sources={
            "api-a": SourcePlan(
                shards=[
                    ShardPlan(shard="2026-11-24", mode="fanout", expected_pages=150),
                    ShardPlan(shard="2026-11-25", mode="fanout", expected_pages=3),
                ]
            )
        },
    )
    ledger.write_manifest(manifest)
    # When a batch records all 150 pages of the first shard and pages 1 and 2 of the second
    written = ledger.mark_landed(
        [(item("2026-11-24", p), {"n": p}) for p in range(150, 0, -1)] + [(item("2026-11-25", p), {}) for p in (2, 1)]
    )
    # Then that is three markers, and status has the first shard complete and the second missing page 3
    assert written == 3
    first, second = ledger.status(manifest).sources[0].shards
    assert first.complete and first.landed_pages == 150
    assert not second.complete and second.missing == [3]
    # And a redelivered batch whose pages overlap the first ones completes the shard, nothing counted twice
    ledger.mark_landed([(item("2026-11-25", p), {}) for p in (3, 2)])
    second = ledger.status(manifest).sources[0].shards[1]
    assert second.complete and second.landed_pages == 3


@mock_aws
def test_a_continuation_is_claimed_once_and_a_cursor_is_recorded_once() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    page_2 = item("all", 2).model_copy(update={"cursor": "c2"})
    # The first delivery wins the claim; a second one finds it pending, then sent once confirmed
    assert ledger.claim_continuation(page_2).claim is Claim.CREATED
    assert ledger.claim_continuation(page_2).claim is Claim.PENDING
    ledger.confirm_continuation(page_2)
    assert ledger.claim_continuation(page_2).claim is Claim.SENT
    # A cursor leads to the page it led to first, however often (and from wherever) it comes back
    assert ledger.first_page_of_cursor(page_2) == 2
    assert ledger.first_page_of_cursor(page_2.model_copy(update={"page": 7})) == 2


@mock_aws
def test_a_shard_whose_pages_all_landed_is_complete_only_when_its_records_reconcile() -> None:
    # Given a run whose shards the vendor said hold 25 records, in pages of 10
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    days = ("2026-11-23", "2026-11-24", "2026-11-25")
    plan = SourcePlan(
        shards=[
            ShardPlan(shard=day, mode="fanout", expected_pages=3, expected_records=25, page_size=10, capped=True)
            for day in days
        ]
    )
    manifest = RunManifest(
        run_id=RUN,
        ingestion_date=date(2026, 11, 26),
        created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
        trigger="schedule",
        sources={"api-a": plan},
    )
    # When the first shard lands 10 + 10 + 5, the second 10 + 6 + 5, the third pages 1 and 2 short
    held = {days[0]: (10, 10, 5), days[1]: (10, 6, 5), days[2]: (4, 10)}
    ledger.mark_landed(
        [(item(day, page), {"records": n}) for day, counts in held.items() for page, n in enumerate(counts, 1)]
    )
    whole, short, partial = ledger.status(manifest).sources[0].shards
    # Then the first reconciles and is complete
    assert whole.complete and (whole.expected_records, whole.landed_records, whole.unreconciled) == (25, 25, None)
    # And the second, every page landed, is not: its short page is flagged and the records differ
    assert not short.complete and short.missing == [] and short.short_pages == {2: 6}
    assert short.unreconciled == (
        "page 2 holds 6 records, fewer than the page size 10, and is not the last; "
        "the vendor stated 25 records, 21 landed"
    )
    # And the third flags its short page while page 3 is missing (the total waits for every page)
    assert partial.missing == [3] and partial.short_pages == {1: 4}
    assert partial.unreconciled == "page 1 holds 4 records, fewer than the page size 10, and is not the last"
    # And the source (the hook of the incremental mark) and the run are not complete
    assert not ledger.source_status(manifest, "api-a").complete and not ledger.status(manifest).complete


@mock_aws
def test_a_manifest_without_what_to_reconcile_reads_the_pages_only() -> None:
    # A manifest written before reconciliation (or a single page, or no probe): pages decide, as they did.
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    document = {
        "run_id": RUN,
        "ingestion_date": "2026-11-26",
        "created_at": "2026-11-26T01:00:00Z",
        "trigger": "schedule",
        "sources": {"api-a": {"shards": [{"shard": "all", "mode": "fanout", "expected_pages": 2, "messages": 2}]}},
    }
    manifest = RunManifest.model_validate(document)
    ledger.mark_landed([(item("all", 1), {"records": 3}), (item("all", 2), {"records": 1})])
    shard = ledger.status(manifest).sources[0].shards[0]
    assert shard.complete and shard.expected_records is None and shard.landed_records is None


@pytest.mark.parametrize(
    ("shard", "missing_pages"),
    [
        (ShardStatus("all", "fanout", 5, 3, True, missing=[2, 4], failures={4: "403"}), [2, 4]),
        (ShardStatus("all", "chain", 3, 3, True), []),
        (ShardStatus("all", "chain", None, 2, False, note="chain not ended"), [3]),
        (ShardStatus("all", "chain", None, 2, False, missing=[2], note="chain not ended"), [2, 4]),
        (ShardStatus("all", "chain", None, 3, False, failures={4: "403"}, note="chain not ended"), [4]),
        (ShardStatus("all", "chain", None, 0, False, note="chain not started"), [1]),
        (ShardStatus("2026-11-25", "fanout", None, 0, False, note="probe failed: 500"), [1]),
    ],
    ids=[
        "ended: its gaps, a failed one among them",
        "ended, complete: none",
        "a chain not ended: the page after its last",
        "a chain not ended, with a gap: the gap and the page after",
        "a chain stopped by a failed page: that page",
        "a chain not started: its first page",
        "a plan that failed: at least its first page",
    ],
)
def test_a_shard_s_missing_pages_are_its_gaps_its_failures_and_the_page_it_awaits(
    shard: ShardStatus, missing_pages: list[int]
) -> None:
    # The one definition the report, the completeness metric and status count with
    assert shard.missing_pages == missing_pages and shard.pages_missing == len(missing_pages)


@mock_aws
def test_status_lists_each_shard_once_and_with_details_reads_each_marker_once() -> None:
    # Given a run of two shards: one reconciled (its markers read for the records), one chain ended after a failure
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    manifest = RunManifest(
        run_id=RUN,
        ingestion_date=date(2026, 11, 26),
        created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
        trigger="schedule",
        sources={
            "api-a": SourcePlan(
                shards=[
                    ShardPlan(shard="2026-11-25", mode="fanout", expected_pages=2, expected_records=15, page_size=10),
                    ShardPlan(shard="all", mode="chain"),
                ]
            )
        },
    )
    ledger.mark_landed([(item("2026-11-25", 1), {"records": 10})])
    ledger.mark_landed([(item("2026-11-25", 2), {"records": 5})])
    ledger.mark_landed([(item("all", 1), {"records": 3}), (item("all", 3), {"records": 3})])
    ledger.mark_failure(item("all", 2), {"error": "PermanentHttpError", "reason": "403", "attempt": 1})
    ledger.mark_end(item("all", 3))
    calls: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    # When the status is read without, then with, the pages' details
    plain = ledger.status(manifest).sources[0]
    read_plain, calls[:] = list(calls), []
    detailed = ledger.status(manifest, details=True).sources[0]
    # Then each shard is listed once; the reconciled shard's two markers, the failure and the end read once
    assert sorted(read_plain) == ["GetObject"] * 4 + ["ListObjectsV2"] * 2
    assert [shard.pages for shard in plain.shards] == [None, None]
    # And with the details, the chain's one marker too, and the pages are there
    assert sorted(calls) == ["GetObject"] * 5 + ["ListObjectsV2"] * 2
    assert [sorted(shard.pages or {}) for shard in detailed.shards] == [[1, 2], [1, 3]]
    assert [(shard.complete, shard.missing_pages) for shard in detailed.shards] == [(True, []), (False, [2])]


def child_item(source: str, shard: str, page: int) -> WorkItem:
    values = {"id": shard} if shard.startswith("p-") else None  # a child shard's page carries its parent values
    return WorkItem(
        run_id=RUN, source=source, ingestion_date=date(2026, 11, 26), shard=shard, page=page, parent_values=values
    )


def family_manifest() -> RunManifest:
    """repos (a chain) -> issues (chains, one per repo) -> comments (single pages, one per issue)."""
    return RunManifest(
        run_id=RUN,
        ingestion_date=date(2026, 11, 26),
        created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
        trigger="schedule",
        sources={
            "comments": SourcePlan(shards=[], parent=ChildOf(source="issues", mode="fanout")),
            "repos": SourcePlan(shards=[ShardPlan(shard="all", mode="chain")]),
            "issues": SourcePlan(shards=[], parent=ChildOf(source="repos", mode="chain")),
            "other": SourcePlan(shards=[ShardPlan(shard="all", mode="chain")]),
        },
    )


def test_a_manifest_lists_a_source_s_descendants_parents_first() -> None:
    manifest = family_manifest()
    assert manifest.descendants("repos") == ["issues", "comments"]
    assert manifest.descendants("issues") == ["comments"]
    assert manifest.descendants("other") == manifest.descendants("comments") == []


@mock_aws
def test_the_status_of_200_child_shards_reads_each_shard_s_marker_once_several_at_a_time() -> None:
    # Given a parent whose two pages announced 100 child shards each, every child shard a one-page chain that ended
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger = Ledger(s3, "lake")
    manifest = family_manifest()
    shards = [f"p-repo-{index:03d}-{index:016x}" for index in range(200)]
    ledger.mark_landed(
        [
            (child_item("repos", "all", 1), {"records": 100, "has_next": True}),
            (child_item("repos", "all", 2), {"records": 100, "has_next": False}),
        ]
    )
    ledger.mark_end(child_item("repos", "all", 2))
    for page, announced in ((1, shards[:100]), (2, shards[100:])):
        ledger.claim_children(child_item("repos", "all", page), "issues", announced)
        ledger.confirm_children(child_item("repos", "all", page), "issues", announced)
    for shard in shards:
        ledger.mark_landed([(child_item("issues", shard, 1), {"records": 3, "has_next": False})])
        ledger.mark_end(child_item("issues", shard, 1))
    calls: list[tuple[str, int]] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.append((model.name, threading.get_ident())))
    # When the status of the issues is read with the pages' details (what the report and the completeness check do)
    issues = ledger.source_status(manifest, "issues", details=True)
    # Then it is complete, every shard known; the chains' ends come from their landed markers (has_next false), not
    # from 200 reads of end.json: the parent's listing, marker and two children markers, the child's one listing,
    # and one marker per child shard (406 requests before)
    assert issues.complete and len(issues.shards) == 200 and all(s.expected_pages == 1 for s in issues.shards)
    names = [name for name, _ in calls]
    assert names.count("ListObjectsV2") == 2 and names.count("GetObject") == 1 + 2 + 200 and len(names) == 205
    # And they were read several at a time
    assert len({thread for _, thread in calls}) > 1


@mock_aws
def test_a_parent_counts_as_complete_for_its_mark_only_with_all_its_descendants() -> None:
    # Given repos complete, and its child's one shard ended, but the grandchild's announced shard not landed
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    ledger, marks = Ledger(s3, "lake"), MarkStore(s3, "lake")
    manifest = family_manifest()
    ledger.mark_landed([(child_item("repos", "all", 1), {"has_next": False})])
    ledger.mark_end(child_item("repos", "all", 1))
    ledger.confirm_children(child_item("repos", "all", 1), "issues", ["p-a-0000000000000001"])
    ledger.mark_landed([(child_item("issues", "p-a-0000000000000001", 1), {"has_next": False})])
    ledger.mark_end(child_item("issues", "p-a-0000000000000001", 1))
    ledger.confirm_children(child_item("issues", "p-a-0000000000000001", 1), "comments", ["p-c-0000000000000002"])
    # Then repos and issues are complete by themselves, yet not for the mark: the comments are not
    assert ledger.source_status(manifest, "repos").complete and ledger.source_status(manifest, "issues").complete
    assert [s.complete for s in ledger.lineage_status(manifest, "repos")] == [True, True, False]
    assert not marks.complete(manifest, "repos")
    # And once the comment lands, the parent counts as complete
    ledger.mark_landed([(child_item("comments", "p-c-0000000000000002", 1), {"has_next": False})])
    assert marks.complete(manifest, "repos")


@pytest.mark.parametrize("name", sorted(ledger_module._MODELS))
def test_the_run_s_documents_and_statuses_are_importable_from_the_ledger(name: str) -> None:
    # Given the ledger's models and statuses (apilake.ledger_models, imported at their first use)
    # When one is asked of apilake.ledger, Then it is apilake.ledger_models' own
    assert getattr(ledger_module, name) is getattr(ledger_models, name)


def test_a_name_the_ledger_does_not_have_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Manifest'"):
        _ = ledger_module.Manifest  # type: ignore[attr-defined]
