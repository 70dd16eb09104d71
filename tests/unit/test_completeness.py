"""The completeness check: which run it judges for each source, what it says of it (metrics, summary), the
reports it writes. The ledger is written as the planner and the workers write it, in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.completeness import CompletenessCheck, CompletenessSummary, check_time
from apilake.config import SourcesFile, parse_sources
from apilake.exceptions import ApilakeError, ConfigError
from apilake.ledger import Ledger, RunManifest, ShardPlan, SourcePlan, manifest_key
from apilake.messages import WorkItem
from apilake.names import dlq_name
from apilake.report import report_keys

BUCKET = "lake"
STAGE = "test"
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
NIGHT = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)  # the nightly runs' scheduled time: due at 07:00 (360 minutes)
INCREMENTAL = {"cursor_path": "updated", "param": "since", "initial_value": "2026-01-01T00:00:00Z"}


def sources_file(*names: str, **extra: dict[str, Any]) -> SourcesFile:
    """Sources of one page each (their pagination does not matter here: the manifests say what was planned)."""
    return parse_sources(
        {
            "version": 1,
            "sources": [
                {
                    "name": name,
                    "base_url": "https://api.example.com",
                    "records_path": "data",
                    "pagination": {"type": "single"},
                    **extra.get(name, {}),
                }
                for name in names
            ],
        },
        "sources.yaml",
    )


def fanout(pages: int | None, shard: str = "all", error: str | None = None) -> SourcePlan:
    return SourcePlan(
        shards=[ShardPlan(shard=shard, mode="fanout", expected_pages=pages, messages=pages or 0, error=error)]
    )


def chain() -> SourcePlan:
    return SourcePlan(shards=[ShardPlan(shard="all", mode="chain", messages=1)])


@dataclass
class Lake:
    s3: Any
    sqs: Any
    ledger: Ledger

    def run(
        self,
        run_id: str,
        created_at: datetime,
        plans: dict[str, SourcePlan],
        trigger: str = "schedule",
    ) -> RunManifest:
        manifest = RunManifest.model_validate(
            {
                "run_id": run_id,
                "ingestion_date": created_at.date(),
                "created_at": created_at,
                "trigger": trigger,
                "sources": plans,
            }
        )
        self.ledger.write_manifest(manifest)
        return manifest

    def item(self, run_id: str, source: str, page: int, shard: str = "all") -> WorkItem:
        return WorkItem(run_id=run_id, source=source, ingestion_date=NIGHT.date(), shard=shard, page=page)

    def land(self, run_id: str, source: str, pages: list[int], records: int = 10, shard: str = "all") -> None:
        self.ledger.mark_landed(
            [(self.item(run_id, source, page, shard), {"records": records, "bytes": 100}) for page in pages]
        )

    def fail(self, run_id: str, source: str, page: int, reason: str) -> None:
        details = {"error": "PermanentHttpError", "reason": reason, "attempt": 8}
        self.ledger.mark_failure(self.item(run_id, source, page), details)

    def end(self, run_id: str, source: str, page: int) -> None:
        self.ledger.mark_end(self.item(run_id, source, page))

    def dlq(self, source: str, messages: int = 0) -> None:
        url = self.sqs.create_queue(QueueName=dlq_name(STAGE, source))["QueueUrl"]
        for number in range(messages):
            self.sqs.send_message(QueueUrl=url, MessageBody=f"message {number}")

    def check(self, sources: SourcesFile, now: datetime = NOW, within_minutes: int = 360) -> CompletenessSummary:
        check = CompletenessCheck(self.ledger, sources, self.sqs, STAGE, timedelta(minutes=within_minutes))
        return check.check(now)

    def report(self, run_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=BUCKET, Key=report_keys(run_id)[0])["Body"].read()
        report: dict[str, Any] = json.loads(body)
        return report

    def reported_runs(self) -> set[str]:
        keys = [obj["Key"] for obj in self.s3.list_objects_v2(Bucket=BUCKET, Prefix="ledger/runs/").get("Contents", [])]
        return {key.split("run=")[1].split("/")[0] for key in keys if key.endswith("/report.json")}


@pytest.fixture(name="lake")
def moto_lake() -> Iterator[Lake]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield Lake(s3, boto3.client("sqs", region_name="us-east-1"), Ledger(s3, BUCKET))


def emitted(out: str) -> dict[tuple[str, str | None], float]:
    """The EMF documents printed: (metric, its source or None for the stack) -> value; each key once."""
    found: dict[tuple[str, str | None], float] = {}
    for line in out.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        document = json.loads(line)
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        dimensions = set(directive["Dimensions"][0])
        for metric in directive["Metrics"]:
            key = (metric["Name"], document.get("source"))
            assert key not in found, f"{key} emitted twice"
            # A source's metric has its dimension; the stack's has the service alone (what the alarms name)
            if key[1] is None:
                assert dimensions == {"service"} and document["service"] == "apilake", document
            else:
                assert "source" in dimensions, document
            value = document[metric["Name"]]
            (found[key],) = value if isinstance(value, list) else [value]
    return found


RUN = "sched-20261126T010000Z"


@pytest.mark.parametrize(
    ("plan", "ledger", "verdict", "extra"),
    [
        pytest.param(fanout(3), [("land", [1, 2, 3])], (1, 0, 30, 3, False), {}, id="complete"),
        pytest.param(
            fanout(4),
            [("land", [1, 2]), ("fail", 3)],
            (0, 2, 20, 2, False),
            {},
            id="incomplete: a page failed, another not landed",
        ),
        pytest.param(fanout(0), [], (1, 0, 0, 0, True), {}, id="landed nothing: planned zero pages"),
        pytest.param(fanout(2), [], (0, 2, 0, 0, True), {}, id="landed nothing: no planned page landed"),
        pytest.param(fanout(2), [("land0", [1, 2])], (1, 0, 0, 2, True), {}, id="landed nothing: empty pages"),
        pytest.param(chain(), [("land", [1, 2])], (0, 1, 20, 2, False), {}, id="a chain that has not ended"),
        pytest.param(chain(), [("land", [1, 2, 3]), ("end", 3)], (1, 0, 30, 3, False), {}, id="a chain that ended"),
        pytest.param(
            chain(), [("land", [1, 3])], (0, 2, 20, 2, False), {}, id="a chain with a gap, not ended: the gap and more"
        ),
        pytest.param(
            chain(),
            [("land", [1, 2, 3]), ("fail", 4)],
            (0, 1, 30, 3, False),
            {},
            id="a chain stopped by a failed page: that page",
        ),
        pytest.param(fanout(None, error="probe failed: 500"), [], (0, 1, 0, 0, True), {}, id="a plan that failed"),
        pytest.param(
            fanout(1, shard="since-2026-11-25T00.00.00Z"),
            [("land0", [1])],
            (1, 0, 0, 1, False),
            {"incremental": INCREMENTAL},
            id="incremental, complete, nothing new: not counted as landed nothing",
        ),
    ],
)
def test_the_latest_due_scheduled_run_is_judged_and_said_in_metrics(
    lake: Lake,
    capsys: pytest.CaptureFixture[str],
    plan: SourcePlan,
    ledger: list[tuple[str, Any]],
    verdict: tuple[int, int, int, int, bool],
    extra: dict[str, Any],
) -> None:
    # Given a nightly run of one source, planned at 01:00, and what landed of it
    shard = plan.shards[0].shard
    lake.run(RUN, NIGHT, {"api-x": plan})
    for what, arg in ledger:
        if what == "land":
            lake.land(RUN, "api-x", arg, shard=shard)
        elif what == "land0":
            lake.land(RUN, "api-x", arg, records=0, shard=shard)
        elif what == "fail":
            lake.fail(RUN, "api-x", arg, "HTTP 403 from the vendor")
        else:
            lake.end(RUN, "api-x", arg)
    capsys.readouterr()
    # When the check runs at 08:00 (the run was due at 07:00)
    summary = lake.check(sources_file("api-x", **{"api-x": extra}))
    # Then it judged that run, and said so in the metrics of the source and of the stack
    complete, missing, records, landed_pages, nothing = verdict
    (judged,) = summary.sources
    assert (judged.run_id, judged.due_at) == (RUN, NIGHT + timedelta(hours=6))
    assert (judged.complete, judged.pages_missing, judged.records_landed) == (bool(complete), missing, records)
    assert (judged.pages_landed, judged.landed_nothing) == (landed_pages, nothing)
    assert emitted(capsys.readouterr().out) == {
        ("run_complete", "api-x"): complete,
        ("pages_missing", "api-x"): missing,
        ("records_landed", "api-x"): records,
        ("sources_incomplete", None): 1 - complete,
        ("sources_landed_nothing", None): int(nothing),
    }
    assert (summary.sources_incomplete, summary.sources_landed_nothing) == (1 - complete, int(nothing))
    # And the run's report was written, with the same verdict and the same pages missing
    assert summary.reports == [RUN] and lake.report(RUN)["complete"] is bool(complete)
    assert lake.report(RUN)["sources"][0]["pages_missing"] == missing


def test_the_report_of_an_incomplete_run_says_what_is_missing_why_and_the_dlq_depths(lake: Lake) -> None:
    # Given a run of two sources: one complete, one with a failed page (its message in the DLQ) and one not landed
    lake.run(RUN, NIGHT, {"api-x": fanout(2), "api-y": fanout(4)})
    lake.land(RUN, "api-x", [1, 2])
    lake.land(RUN, "api-y", [1, 2])
    lake.fail(RUN, "api-y", 3, "HTTP 403 from the vendor")
    lake.dlq("api-x")
    lake.dlq("api-y", messages=1)
    # When the check runs
    summary = lake.check(sources_file("api-x", "api-y"))
    # Then one source is incomplete, and the report says which pages are missing and why, and the DLQ depths
    assert [(v.source, v.complete, v.pages_missing) for v in summary.sources] == [
        ("api-x", True, 0),
        ("api-y", False, 2),
    ]
    report = lake.report(RUN)
    by_source = {source["source"]: source for source in report["sources"]}
    assert report["complete"] is False
    assert (by_source["api-x"]["dlq_depth"], by_source["api-y"]["dlq_depth"]) == (0, 1)
    reasons = {missing["page"]: missing["reason"] for missing in by_source["api-y"]["missing"]}
    assert set(reasons) == {3, 4} and "HTTP 403 from the vendor" in reasons[3]
    assert by_source["api-y"]["pages_missing"] == summary.sources[1].pages_missing


def test_a_source_without_a_dead_letter_queue_is_reported_with_its_depth_unknown(lake: Lake) -> None:
    lake.run(RUN, NIGHT, {"api-x": fanout(1)})
    lake.land(RUN, "api-x", [1])
    lake.check(sources_file("api-x"))
    assert lake.report(RUN)["sources"][0]["dlq_depth"] is None


def test_a_run_not_yet_due_is_not_judged_and_an_earlier_due_one_is(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given last night's run of api-x (due), a run of api-x two hours ago (due in four), and a new source api-y
    # whose only run is that recent one
    lake.run("sched-20261125T010000Z", NIGHT - timedelta(days=1), {"api-x": fanout(1)})
    lake.land("sched-20261125T010000Z", "api-x", [1])
    lake.run("sched-20261126T060000Z", NOW - timedelta(hours=2), {"api-x": fanout(1), "api-y": fanout(1)})
    capsys.readouterr()
    # When the check runs
    summary = lake.check(sources_file("api-x", "api-y"))
    # Then api-x is judged on the run that is due, api-y not at all: no metric of its own, not counted
    assert [(v.source, v.run_id) for v in summary.sources] == [("api-x", "sched-20261125T010000Z")]
    assert summary.not_due == ["api-y"] and summary.sources_incomplete == 0
    assert {source for _, source in emitted(capsys.readouterr().out)} == {"api-x", None}
    assert lake.reported_runs() == {"sched-20261125T010000Z"}


def test_with_no_due_run_at_all_the_stack_counts_zero(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    lake.run("sched-20261126T070000Z", NOW - timedelta(hours=1), {"api-x": fanout(1)})
    capsys.readouterr()
    summary = lake.check(sources_file("api-x"))
    assert summary.sources == [] and summary.not_due == ["api-x"] and summary.reports == []
    assert emitted(capsys.readouterr().out) == {("sources_incomplete", None): 0, ("sources_landed_nothing", None): 0}


def test_manual_runs_and_backfills_are_never_judged(lake: Lake) -> None:
    # Given a scheduled run, then later a manual run and a backfill (one named like a scheduled run), all due
    lake.run(RUN, NIGHT, {"api-x": fanout(1)})
    lake.land(RUN, "api-x", [1])
    lake.run("manual-20261126T013000Z-a1b2c3", NIGHT + timedelta(minutes=30), {"api-x": fanout(5)}, "manual")
    lake.run("sched-20261126T014000Z", NIGHT + timedelta(minutes=40), {"api-x": fanout(5)}, "manual")
    # When the check runs (their manifests were written after it: not among its recent runs)
    summary = lake.check(sources_file("api-x"))
    # Then the scheduled run is judged, and only its report is written
    assert [(v.run_id, v.complete) for v in summary.sources] == [(RUN, True)]
    assert lake.reported_runs() == {RUN}


def test_a_source_whose_only_runs_are_manual_emits_nothing(lake: Lake) -> None:
    lake.run("manual-20261126T013000Z-a1b2c3", NIGHT, {"api-x": fanout(5)}, "manual")
    assert lake.check(sources_file("api-x")).sources == []


@pytest.mark.parametrize(
    ("own", "stack", "judged"),
    [
        (None, 360, False),  # due at 09:00
        (None, 120, True),  # due at 05:00
        (90, 360, True),  # its schedule's own: due at 04:30
        (300, 120, False),  # its schedule's own, later than the stack's: due at 08:00, a minute after the check
    ],
    ids=["the stack's, not yet", "the stack's, due", "its own, due", "its own, not yet"],
)
def test_a_schedule_s_complete_within_minutes_comes_before_the_stack_s(
    lake: Lake, own: int | None, stack: int, judged: bool
) -> None:
    # Given a run planned at 03:00 of a source with a schedule of its own; the check at 07:59
    schedule: dict[str, Any] = {"expression": "rate(1 hour)"}
    if own is not None:
        schedule["complete_within_minutes"] = own
    sources = sources_file("api-x", **{"api-x": {"schedule": schedule}})
    lake.run("sched-20261126T030000Z-0a1b2c3d", NIGHT + timedelta(hours=2), {"api-x": fanout(1)})
    # Then it is judged once its due time has passed
    summary = lake.check(sources, now=NOW - timedelta(minutes=1), within_minutes=stack)
    assert bool(summary.sources) is judged


def test_each_source_is_judged_on_its_own_latest_due_run(lake: Lake) -> None:
    # Given two schedules: api-x nightly (360 minutes), api-y hourly (complete within 30 minutes)
    sources = sources_file(
        "api-x", "api-y", **{"api-y": {"schedule": {"expression": "rate(1 hour)", "complete_within_minutes": 30}}}
    )
    lake.run(RUN, NIGHT, {"api-x": fanout(1)})
    for hour in (6, 7):
        lake.run(f"sched-20261126T0{hour}0000Z-0a1b2c3d", NIGHT.replace(hour=hour), {"api-y": fanout(1)})
    lake.land("sched-20261126T060000Z-0a1b2c3d", "api-y", [1])
    # When the check runs at 07:20: the 07:00 run of api-y is not due yet
    summary = lake.check(sources, now=NIGHT.replace(hour=7, minute=20))
    # Then api-y is judged on its 06:00 run, api-x on the nightly one
    assert [(v.source, v.run_id, v.complete) for v in summary.sources] == [
        ("api-x", RUN, False),
        ("api-y", "sched-20261126T060000Z-0a1b2c3d", True),
    ]
    assert lake.reported_runs() == {RUN, "sched-20261126T060000Z-0a1b2c3d"}


def test_runs_older_than_the_lookback_are_not_read(lake: Lake) -> None:
    # Given a run of api-x fifteen days old, and a manifest there that is not a manifest at all
    lake.run("sched-20261111T010000Z", NIGHT - timedelta(days=15), {"api-x": fanout(1)})
    lake.s3.put_object(Bucket=BUCKET, Key=manifest_key("sched-20261110T010000Z"), Body=b"{}")
    # Then the check judges nothing (and did not read the broken one)
    assert lake.check(sources_file("api-x")).sources == []


def test_a_manifest_that_does_not_parse_is_an_error_naming_it(lake: Lake) -> None:
    lake.s3.put_object(Bucket=BUCKET, Key=manifest_key(RUN), Body=b'{"run_id": "x"}')
    with pytest.raises(ApilakeError) as raised:
        lake.check(sources_file("api-x"))
    assert f"s3://{BUCKET}/ledger/runs/run={RUN}/manifest.json: trigger: Field required" in str(raised.value)


def test_a_source_no_longer_in_the_sources_file_is_not_judged(lake: Lake) -> None:
    lake.run(RUN, NIGHT, {"api-x": fanout(1), "retired": fanout(1)})
    assert [v.source for v in lake.check(sources_file("api-x")).sources] == ["api-x"]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"source": "aws.scheduler", "time": "2026-11-26T07:00:00Z", "detail": {}},
            datetime(2026, 11, 26, 7, tzinfo=UTC),
        ),
        ({"time": "2026-11-26T09:00:00+02:00"}, datetime(2026, 11, 26, 7, tzinfo=UTC)),
        ({}, NOW),
    ],
    ids=["the scheduler's", "a time with a zone", "by hand: now"],
)
def test_the_check_judges_as_of_the_event_s_time(event: dict[str, Any], expected: datetime) -> None:
    assert check_time(event, now=NOW) == expected


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"time": "this morning"}, "completeness event: time: Input should be a valid datetime"),
        ({"time": "2026-11-26T07:00:00"}, "completeness event: time: Input should have timezone info"),
        ([], "completeness event: expected a JSON object, got list"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(event: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_time(event, now=NOW)
    assert message in str(raised.value)
