"""The completeness check keeps the run reports current: of the judged runs and of every run planned in the
last two days (manual runs and backfills too), each put only when a figure changed, a complete one final; and
the DLQ depths it gives them count every message, as `apilake status` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apilake import completeness
from apilake.exceptions import ApilakeError
from apilake.ledger import manifest_key
from apilake.names import dlq_name
from apilake.planner import scheduled_run_id
from apilake.run_summary import summary_key
from tests.unit.test_completeness import (  # noqa: F401 - moto_lake: the fixture "lake"
    BUCKET,
    NIGHT,
    NOW,
    RUN,
    STAGE,
    Lake,
    emitted,
    fanout,
    moto_lake,
    sources_file,
)


@pytest.fixture(name="clock")
def clock_now() -> datetime:
    """The clock's time: the recent runs are found by their manifests' LastModified, which moto takes from the
    clock, so these checks run at the clock's time, their runs planned around it."""
    return datetime.now(UTC).replace(microsecond=0)


def test_every_run_planned_in_the_last_two_days_gets_its_report_and_only_the_scheduled_ones_are_judged(
    clock: datetime, lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given last night's scheduled run, and a manual run and a backfill planned since, still landing
    night = scheduled_run_id(clock - timedelta(hours=8))
    lake.run(night, clock - timedelta(hours=8), {"api-x": fanout(1)})
    lake.land(night, "api-x", [1])
    manual, backfill = "manual-today-a1b2c3", "backfill-2026-11"
    lake.run(manual, clock, {"api-x": fanout(2)}, "manual")
    lake.run(
        backfill, clock, {"api-x": fanout(1, shard="2026-11-01"), "api-y": fanout(1, shard="2026-11-01")}, "manual"
    )
    lake.land(manual, "api-x", [1])
    capsys.readouterr()
    # When the check runs
    summary = lake.check(sources_file("api-x", "api-y"), now=clock + timedelta(minutes=5))
    # Then only the scheduled run is judged and said in metrics
    assert [(v.source, v.run_id, v.complete) for v in summary.sources] == [("api-x", night, True)]
    assert {source for _, source in emitted(capsys.readouterr().out)} == {"api-x", None}
    # And every run has its report, the manual run's saying what landed of it so far
    assert sorted(summary.reports) == sorted([night, manual, backfill]) == sorted(lake.reported_runs())
    assert (lake.report(manual)["pages_landed"], lake.report(manual)["pages_missing"]) == (1, 1)
    # And two days later, only the scheduled run's is looked at again (its own, final: complete)
    later = lake.check(sources_file("api-x", "api-y"), now=clock + timedelta(hours=49))
    assert (later.reports, later.reports_current) == ([], [night])


def test_the_recent_runs_reported_are_the_newest_few(
    clock: datetime, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completeness, "RECENT_REPORTS", 2)
    for run_id in ("manual-1", "manual-2", "manual-3"):
        lake.run(run_id, clock, {"api-x": fanout(1)}, "manual")
    assert lake.check(sources_file("api-x"), now=clock + timedelta(minutes=5)).reports == ["manual-3", "manual-2"]


def test_a_recent_manifest_that_does_not_parse_fails_the_check_after_the_others(clock: datetime, lake: Lake) -> None:
    # Given a manual run, and a manifest beside it that is not one
    lake.run("manual-good", clock, {"api-x": fanout(1)}, "manual")
    lake.s3.put_object(Bucket=BUCKET, Key=manifest_key("manual-broken"), Body=b"{}")
    # When the check runs, then it fails naming that manifest, the other run's report written
    with pytest.raises(ApilakeError) as raised:
        lake.check(sources_file("api-x"), now=clock + timedelta(minutes=5))
    assert f"reports not written: s3://{BUCKET}/ledger/runs/run=manual-broken/manifest.json" in str(raised.value)
    assert lake.reported_runs() == {"manual-good"}


def calls_of(client: Any) -> list[tuple[str, str]]:
    """The (operation, key) the S3 client calls from now on."""
    calls: list[tuple[str, str]] = []
    client.meta.events.register(
        "provide-client-params.s3.*",
        lambda params, model, **_: calls.append((model.name, params.get("Key", params.get("Prefix", "")))),
    )
    return calls


def test_a_report_is_put_only_when_a_figure_changed_and_a_complete_one_is_final(lake: Lake) -> None:
    # Given a nightly run of two sources judged once: api-x complete, api-y missing a page
    lake.run(RUN, NIGHT, {"api-x": fanout(1)})
    lake.run("sched-20261126T010000Z-0a1b2c3d", NIGHT, {"api-y": fanout(2)})
    lake.land(RUN, "api-x", [1])
    lake.land("sched-20261126T010000Z-0a1b2c3d", "api-y", [1])
    sources = sources_file("api-x", "api-y")
    first = lake.check(sources)
    assert sorted(first.reports) == sorted([RUN, "sched-20261126T010000Z-0a1b2c3d"])
    # When the check runs again, nothing changed
    calls = calls_of(lake.s3)
    again = lake.check(sources, now=NOW + timedelta(minutes=15))
    # Then the same verdicts, no report put, and the complete run's ledger not read: its stored report says it all
    assert [(v.source, v.complete, v.pages_missing) for v in again.sources] == [("api-x", True, 0), ("api-y", False, 1)]
    assert (again.reports, sorted(again.reports_current)) == ([], sorted(first.reports))
    assert [call for call in calls if call[0] == "PutObject"] == []
    assert not any(key.startswith("ledger/source=api-x/") for _, key in calls)
    # And once api-y's last page lands, its report (only) is put again, and says complete, with the run's summary
    lake.land("sched-20261126T010000Z-0a1b2c3d", "api-y", [2])
    calls.clear()
    landed = lake.check(sources, now=NOW + timedelta(minutes=30))
    assert landed.reports == ["sched-20261126T010000Z-0a1b2c3d"] and landed.sources_incomplete == 0
    assert [key for operation, key in calls if operation == "PutObject"] == [
        "ledger/runs/run=sched-20261126T010000Z-0a1b2c3d/report.html",
        summary_key("sched-20261126T010000Z-0a1b2c3d"),
        "ledger/runs/run=sched-20261126T010000Z-0a1b2c3d/report.json",
    ]


def test_a_dlq_s_depth_counts_its_messages_in_flight_too(lake: Lake) -> None:
    # Given api-x's DLQ holding three messages, one of them being looked at (received, not deleted)
    lake.run(RUN, NIGHT, {"api-x": fanout(1)})
    lake.dlq("api-x", messages=3)
    url = lake.sqs.get_queue_url(QueueName=dlq_name(STAGE, "api-x"))["QueueUrl"]
    assert len(lake.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)["Messages"]) == 1
    # Then the report counts all three, as `apilake status` does
    lake.check(sources_file("api-x"))
    assert lake.report(RUN)["sources"][0]["dlq_depth"] == 3
