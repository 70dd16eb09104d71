"""The soak at reduced scale (make soak runs >= 2,000 pages), and the verdict's own arithmetic."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.lake import page_key
from apilake_dev.local.containers import ContainerFaults
from apilake_dev.soak import EXAMPLES, PAGE_SIZE, ShardExpectation, compute_verdict, expectations, run_soak
from apilake_dev.vendors.fake import PERMANENT_KINDS, TRANSIENT_KINDS, Dataset, FaultPlan

# The example that pages by a cursor (the soak serves each example in its own style).
CURSOR = next(s.name for s in EXAMPLES.sources if s.pagination.type == "cursor")
# Rates high enough that a small run sees every kind of fault at least once.
TEST_RATES = dict.fromkeys(TRANSIENT_KINDS, 0.05) | {"malformed": 0.02, "cursor_repeat": 0.03}


@pytest.mark.slow
def test_a_reduced_soak_loses_nothing_duplicates_nothing_and_completes_after_redrive(tmp_path: Path) -> None:
    result = run_soak(
        tmp_path,
        pages=160,
        # make soak's own: a page is redelivered only when its worker is really gone, not when a loaded CI
        # machine (the soak's workers beside another pytest worker) takes a few seconds longer over a batch
        visibility_timeout=6,
        rates=TEST_RATES,
        container_faults=ContainerFaults(crash=0.03, put_failure=0.04, duplicate=0.05),
        seed=2,  # a seed whose draws hit every fault kind in this small run (checked with the plan)
        echo=lambda line: None,
    )
    faults_on, cleared = result.verdicts
    # Every kind of fault happened
    injected = set(result.injected)
    assert {"throttle_seconds", "throttle_date", "throttle_bare", "reset", "slow", "truncated"} <= injected
    assert any(kind.startswith("server_error_") for kind in injected)
    assert {"malformed (pages)", "cursor_repeat (pages)", "crash", "put_failure", "duplicate"} <= injected
    assert result.injected["container_restarts"] >= 1
    # With faults on: nothing lost or duplicated, no chain forked, the DLQ holds exactly the permanent faults
    assert faults_on.ok, faults_on.details
    assert faults_on.dlq > 0 and faults_on.dlq == faults_on.dlq_explained
    # Faults cleared and DLQs redriven: every page of every source landed, once
    assert cleared.ok, cleared.details
    assert cleared.dlq == 0 and cleared.pages_landed == cleared.pages_expected == result.pages_total
    assert result.result.status is not None and result.result.status.complete
    assert result.ok


def test_chains_stop_at_their_first_permanent_fault_fan_outs_skip_theirs() -> None:
    chain = ShardExpectation("a-chain", "all", pages=10, chain=True, permanent={4: "malformed", 7: "cursor_repeat"})
    fan_out = ShardExpectation("a-fan-out", "2026-11-20", pages=5, chain=False, permanent={2: "malformed"})
    assert chain.reachable(faults_on=True) == {1, 2, 3} and chain.dead(faults_on=True) == {4}
    assert fan_out.reachable(faults_on=True) == {1, 3, 4, 5} and fan_out.dead(faults_on=True) == {2}
    assert chain.reachable(faults_on=False) == set(range(1, 11)) and chain.dead(faults_on=False) == set()


def test_expectations_follow_the_vendors_fault_plan() -> None:
    plan = FaultPlan(rates={"malformed": 0.2, "cursor_repeat": 0.2}, seed=5, empty_last_page=True)
    found = expectations({CURSOR: Dataset(CURSOR, total=10 * PAGE_SIZE)}, plan)
    assert [s.pages for s in found] == [11]  # ten full pages and the empty one the vendor adds
    assert found[0].permanent == {
        page: kind
        for page in range(1, 12)
        if (kind := plan.permanent("cursor", CURSOR, page)) and (page < 11 or kind == "malformed")
    }
    assert set(PERMANENT_KINDS) >= set(found[0].permanent.values())


@mock_aws
def test_the_verdict_counts_lost_duplicated_forked_and_unexplained() -> None:
    # Given a lake holding a chain of 4 pages, but: page 3 missing, page 2 repeating a record of
    # page 1, a page 6 beyond the chain's end, and an unexplained message in the DLQ
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    dataset = Dataset(CURSOR, total=4 * PAGE_SIZE - 1)
    records = dataset.records(None, None)

    def land(page: int, rows: list[dict[str, Any]]) -> None:
        body = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
        s3.put_object(Bucket="lake", Key=page_key(CURSOR, date(2026, 11, 26), "all", page), Body=body)

    land(1, records[:PAGE_SIZE])
    land(2, records[PAGE_SIZE : 2 * PAGE_SIZE] + records[:1])
    land(4, records[3 * PAGE_SIZE :])
    land(6, [])
    dead = [{"Body": json.dumps({"shard": "all", "page": 2})}]
    run = SimpleNamespace(s3=s3, deployment=SimpleNamespace(bucket="lake"), per_source={}, dlq_messages=lambda s: dead)
    shards = [ShardExpectation(CURSOR, "all", pages=4, chain=True)]
    # When the verdict is computed
    verdict = compute_verdict(run, "r", {CURSOR: dataset}, shards, faults_on=True, phase="test")  # type: ignore[arg-type]
    # Then it sees all of it, and fails
    assert (verdict.lost, verdict.lost_records, verdict.duplicated_records) == (1, PAGE_SIZE, 1)
    assert verdict.forked == 1 and verdict.dlq_unexplained == 1
    assert not verdict.ok and "FAIL" in verdict.line()
