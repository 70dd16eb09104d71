from datetime import UTC, date, datetime

import boto3
from moto import mock_aws

from apilake.ledger import Claim, Ledger, RunManifest, ShardPlan, SourcePlan
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
