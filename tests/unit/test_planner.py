"""Planner: events become plan requests; sources x shards become work items, sent once each."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

import boto3
import pytest
from moto import mock_aws

from apilake.config import SourcesFile, parse_sources
from apilake.exceptions import ConfigError, PlanningError, TransientHttpError
from apilake.http import Deadline
from apilake.ledger import Ledger
from apilake.messages import WorkItem
from apilake.names import queue_name
from apilake.pagination import FanOut, PageRequest, VendorPage, paginator_for
from apilake.planner import Planner, PlanRequest, parse_planner_event, scheduled_run_id, shards_for
from apilake.queue import QueueLocator, QueueSender
from tests.conftest import load_event

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
STAGE = "test"


def test_the_scheduled_event_fixes_run_id_and_date() -> None:
    request = parse_planner_event(load_event("planner.json"), now=NOW)
    assert request == PlanRequest(
        run_id="sched-20261126T010000Z", ingestion_date=date(2026, 11, 26), trigger="schedule"
    )


def test_a_classic_eventbridge_scheduled_event_works_too() -> None:
    event = {**load_event("planner.json"), "source": "aws.events", "time": "2026-11-25T23:00:00-02:00"}
    assert parse_planner_event(event).run_id == "sched-20261126T010000Z"


def test_scheduled_run_ids_sort_by_their_scheduled_time_in_utc() -> None:
    # Given runs scheduled in several zones, with and without a source schedule's key
    berlin = timezone(timedelta(hours=1))
    runs = [
        (datetime(2026, 11, 26, 0, 30, tzinfo=berlin), "265802fb"),  # 23:30 UTC the day before
        (datetime(2026, 11, 26, 0, 0, tzinfo=UTC), None),
        (datetime(2026, 11, 25, 19, 1, tzinfo=timezone(timedelta(hours=-5))), "0a"),  # 00:01 UTC
    ]
    ids = [scheduled_run_id(when, key) for when, key in runs]
    # Then each id says the UTC time, and sorting the ids sorts the runs by time (the completeness check lists them so)
    assert ids == ["sched-20261125T233000Z-265802fb", "sched-20261126T000000Z", "sched-20261126T000100Z-0a"]
    assert ids == sorted(ids)


def test_the_backfill_event_gives_sources_window_and_ids() -> None:
    request = parse_planner_event(load_event("planner-backfill.json"), now=NOW)
    assert request.sources == ["api-a"]
    assert request.shard_window == (date(2026, 11, 1), date(2026, 11, 7))
    assert request.run_id == "backfill-2026-11-w1" and request.trigger == "manual"


def test_an_empty_manual_event_runs_everything_today() -> None:
    request = parse_planner_event({}, now=NOW)
    assert request.ingestion_date == date(2026, 11, 26) and request.sources is None
    assert request.run_id.startswith("manual-20261126T093000Z-")


def test_a_source_schedule_names_its_sources_and_its_runs() -> None:
    # Given the event of a source schedule that fires at the same minute as the default one
    request = parse_planner_event(load_event("planner-scheduled-sources.json"), now=NOW)
    default = parse_planner_event(load_event("planner.json"), now=NOW)
    # Then it plans its sources, in a run of its own, dated by the scheduled time
    assert request == PlanRequest(
        run_id="sched-20261126T010000Z-265802fb",
        ingestion_date=date(2026, 11, 26),
        trigger="schedule",
        sources=["api-a", "api-c"],
    )
    assert request.run_id != default.run_id
    # And a retried invocation (another execution id, a later delivery) plans the same run
    retried = {**load_event("planner-scheduled-sources.json"), "id": "another-execution"}
    assert parse_planner_event(retried, now=NOW + timedelta(hours=1)) == request


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        ({"sources": ["api-a"]}, "give both schedule and sources, or neither"),
        ({"schedule": "265802fb"}, "give both schedule and sources, or neither"),
        ({"schedule": "265802fb", "sources": []}, "detail.sources: List should have at least 1 item"),
        ({"schedule": "../x", "sources": ["api-a"]}, "detail.schedule: String should match pattern"),
        ({"schedule": "265802fb", "sources": ["API A"]}, "detail.sources.0: String should match pattern"),
        ({"sorces": ["api-a"]}, "detail.sorces: Extra inputs are not permitted"),
    ],
)
def test_a_bad_schedule_detail_says_what_is_wrong(detail: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_planner_event({**load_event("planner.json"), "detail": detail}, now=NOW)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"sorces": ["api-a"]}, "planner event: sorces: Extra inputs are not permitted"),
        ({"shard_from": "2026-11-01"}, "give both shard_from and shard_to"),
        ({"shard_from": "2026-11-07", "shard_to": "2026-11-01"}, "shard_to is before shard_from"),
        ({"shard_from": "2020-01-01", "shard_to": "2026-01-01"}, "at most 366 days"),
        ({"run_id": "../x"}, "planner event: run_id: String should match pattern"),
        (
            {"run_id": "sched-20261126T010000Z"},
            "manual run sched-20261126T010000Z: its id cannot start with 'sched-', which names the scheduled runs",
        ),
        ({"source": "aws.scheduler"}, "planner event: time: Field required"),
        (["api-a"], "planner event: expected a JSON object, got list"),
    ],
)
def test_bad_planner_events_say_what_is_wrong(event: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_planner_event(event, now=NOW)


def sources(*extra: dict[str, Any]) -> SourcesFile:
    def make(name: str, pagination: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": "https://x.example.com",
            "records_path": "data",
            "pagination": pagination,
            **more,
        }

    raw = [
        make("fan", {"type": "page_number", "page_size": 10, "total_path": "total"}),
        make("chain", {"type": "cursor", "cursor_path": "next"}),
        make(
            "daily",
            {"type": "single"},
            sharding={"type": "daily", "start_param": "from", "end_param": "to", "lookback_days": 3},
        ),
        *extra,
    ]
    return parse_sources({"sources": raw}, "test")


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (None, ["2026-11-23", "2026-11-24", "2026-11-25"]),
        ((date(2026, 2, 27), date(2026, 3, 1)), ["2026-02-27", "2026-02-28", "2026-03-01"]),
    ],
)
def test_daily_shards_are_the_lookback_days_or_the_window(
    window: tuple[date, date] | None, expected: list[str]
) -> None:
    request = PlanRequest("r", date(2026, 11, 26), "manual", shard_window=window)
    assert shards_for(sources().get("daily"), request) == expected
    assert shards_for(sources().get("fan"), request) == ["all"]


class StubClient:
    def __init__(self, total: int | Exception) -> None:
        self.total = total
        self.requests: list[PageRequest] = []

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        self.requests.append(request)
        if isinstance(self.total, Exception):
            raise self.total
        return VendorPage({"total": self.total, "data": []}, {}, request.url, 0, 0.0)


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        urls = {
            name: sqs.create_queue(QueueName=queue_name(STAGE, name))["QueueUrl"] for name in ("fan", "chain", "daily")
        }
        yield s3, sqs, urls


def drain_bodies(sqs: Any, url: str) -> list[dict[str, Any]]:
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
        )
    return bodies


def planner(aws: Any, client: StubClient, *extra: dict[str, Any]) -> Planner:
    s3, sqs, _urls = aws
    return Planner(
        sources(*extra),
        QueueLocator(sqs, STAGE),
        Ledger(s3, "lake"),
        QueueSender(sqs),
        lambda source: client,  # type: ignore[arg-type,return-value]
        clock=lambda: NOW,
    )


def test_fan_out_sends_one_message_per_page_and_chains_send_the_first(aws: Any) -> None:
    # Given a vendor that says 95 records (10 pages of 10) for the fan-out source
    s3, sqs, urls = aws
    client = StubClient(total=95)
    # When the scheduled run is planned
    summary = planner(aws, client).plan(parse_planner_event(load_event("planner.json")), Deadline.unbounded())
    # Then every page of the fan-out source was enqueued once, the chain got page 1, each daily shard its page
    assert summary.messages == {"fan": 10, "chain": 1, "daily": 3}
    assert sorted(b["page"] for b in drain_bodies(sqs, urls["fan"])) == list(range(1, 11))
    assert [b["page"] for b in drain_bodies(sqs, urls["chain"])] == [1]
    assert sorted(b["shard"] for b in drain_bodies(sqs, urls["daily"])) == ["2026-11-23", "2026-11-24", "2026-11-25"]
    # And the probe asked for page 1 of the fan-out source only
    assert [r.params for r in client.requests] == [{"page": "1", "per_page": "10"}]
    # And the manifest says what to expect
    manifest = Ledger(s3, "lake").read_manifest("sched-20261126T010000Z")
    assert manifest is not None
    assert manifest.sources["fan"].shards[0].expected_pages == 10
    assert manifest.sources["chain"].shards[0].mode == "chain"


def test_a_failed_probe_fails_its_source_plans_the_others_and_raises(aws: Any) -> None:
    s3, sqs, urls = aws
    with pytest.raises(PlanningError, match="fan"):
        planner(aws, StubClient(TransientHttpError("503 from x"))).plan(
            PlanRequest("r1", date(2026, 11, 26), "manual"), Deadline.unbounded()
        )
    assert drain_bodies(sqs, urls["fan"]) == []
    assert len(drain_bodies(sqs, urls["chain"])) == 1
    manifest = Ledger(s3, "lake").read_manifest("r1")
    assert manifest is not None and "probe failed: 503 from x" in str(manifest.sources["fan"].shards[0].error)


HOURLY = {
    "name": "hourly",
    "base_url": "https://x.example.com",
    "records_path": "",
    "pagination": {"type": "single"},
    "schedule": {"expression": "rate(1 hour)"},
}


def test_the_default_schedule_plans_the_sources_without_a_schedule_of_their_own(aws: Any) -> None:
    # Given a source on a schedule of its own (its queue is not even here)
    summary = planner(aws, StubClient(5), HOURLY).plan(
        parse_planner_event(load_event("planner.json")), Deadline.unbounded()
    )
    # Then the default schedule's run leaves it to its own schedule
    assert summary.messages == {"fan": 1, "chain": 1, "daily": 3} and summary.errors == {}


def test_the_default_schedule_with_nothing_left_to_plan_writes_no_run(aws: Any) -> None:
    # Given sources that all run on schedules of their own
    s3, sqs, _urls = aws
    only_hourly = Planner(
        SourcesFile.model_validate({"version": 1, "sources": [HOURLY]}),
        QueueLocator(sqs, STAGE),
        Ledger(s3, "lake"),
        QueueSender(sqs),
        lambda source: StubClient(5),  # type: ignore[arg-type,return-value]
        clock=lambda: NOW,
    )
    # When the stack's default schedule fires
    summary = only_hourly.plan(parse_planner_event(load_event("planner.json")), Deadline.unbounded())
    # Then nothing is planned and no manifest is written (status must not show an empty run as complete)
    assert summary.messages == {} and summary.errors == {}
    assert Ledger(s3, "lake").run_ids() == []


def test_a_source_schedule_plans_its_sources_only(aws: Any) -> None:
    event = {**load_event("planner-scheduled-sources.json"), "detail": {"schedule": "265802fb", "sources": ["chain"]}}
    summary = planner(aws, StubClient(5), HOURLY).plan(parse_planner_event(event), Deadline.unbounded())
    assert summary.messages == {"chain": 1} and summary.run_id == "sched-20261126T010000Z-265802fb"


@pytest.mark.parametrize(
    ("earlier", "refused"),
    [("schedule", True), ("manual", False)],
    ids=["over a scheduled run: refused", "over a manual run (its retry): planned again"],
)
def test_a_manual_run_never_replaces_a_scheduled_run_s_manifest(
    aws: Any, earlier: Literal["schedule", "manual"], refused: bool
) -> None:
    # Given a run "nightly" planned earlier (by a schedule whose ids were not yet prefixed, or by hand)
    s3, sqs, urls = aws
    ledger = Ledger(s3, "lake")
    plan = planner(aws, StubClient(5))
    plan.plan(PlanRequest("nightly", date(2026, 11, 25), earlier), Deadline.unbounded())
    before = ledger.read_manifest("nightly")
    drain_bodies(sqs, urls["chain"])
    # When a manual run of that id is asked for
    manual = PlanRequest("nightly", date(2026, 11, 26), "manual", sources=["chain"])
    if refused:
        # Then, over a scheduled run, it is refused naming the run, its manifest left as it was, nothing sent
        with pytest.raises(ConfigError) as raised:
            plan.plan(manual, Deadline.unbounded())
        assert "manual run nightly: a scheduled run has that id (planned at 2026-11-26T09:30:00+00:00)" in str(
            raised.value
        )
        assert ledger.read_manifest("nightly") == before and drain_bodies(sqs, urls["chain"]) == []
    else:
        # Then, over a manual run, it is planned again
        assert plan.plan(manual, Deadline.unbounded()).messages == {"chain": 1}


def test_a_manual_run_plans_every_source_whatever_its_schedule(aws: Any) -> None:
    request = PlanRequest("r1", date(2026, 11, 26), "manual")
    assert [s.name for s in request.select(sources(HOURLY))] == ["fan", "chain", "daily", "hourly"]


def test_a_subset_of_sources_is_planned_alone(aws: Any) -> None:
    summary = planner(aws, StubClient(5)).plan(
        PlanRequest("r1", date(2026, 11, 26), "manual", sources=["chain"]), Deadline.unbounded()
    )
    assert summary.messages == {"chain": 1}


ORPHAN = {"name": "orphan", "base_url": "https://x.example.com", "records_path": "", "pagination": {"type": "single"}}
FAN_ORPHAN = {**ORPHAN, "pagination": {"type": "page_number", "total_path": "total"}}


def test_a_source_without_a_queue_fails_alone_naming_its_queue(aws: Any) -> None:
    # Given a sources file with a fan-out source whose queue was never deployed
    s3, sqs, urls = aws
    client = StubClient(total=5)
    # When the run is planned
    with pytest.raises(PlanningError) as raised:
        planner(aws, client, FAN_ORPHAN).plan(PlanRequest("r1", date(2026, 11, 26), "manual"), Deadline.unbounded())
    # Then the error names the source and the queue it looked for, and says what to do
    assert "source 'orphan': no queue apilake-test-orphan: deploy the template generated from this sources file" in str(
        raised.value
    )
    # And the other sources were planned and sent, the orphan was not even probed
    assert len(drain_bodies(sqs, urls["chain"])) == 1 and len(drain_bodies(sqs, urls["fan"])) == 1
    assert len(client.requests) == 1
    # And the manifest says why the orphan has nothing
    manifest = Ledger(s3, "lake").read_manifest("r1")
    assert manifest is not None
    assert "no queue apilake-test-orphan" in str(manifest.sources["orphan"].shards[0].error)


def test_queues_are_found_by_name_once_per_container(aws: Any) -> None:
    _s3, sqs, urls = aws
    calls: list[str] = []
    original = sqs.get_queue_url

    def counting(**kwargs: Any) -> Any:
        calls.append(kwargs["QueueName"])
        return original(**kwargs)

    sqs.get_queue_url = counting
    queues = QueueLocator(sqs, STAGE)
    assert [queues.url("fan"), queues.url("fan"), queues.url("chain")] == [urls["fan"], urls["fan"], urls["chain"]]
    assert calls == ["apilake-test-fan", "apilake-test-chain"]


def test_a_missing_queue_is_looked_up_again_next_time(aws: Any) -> None:
    # A queue deployed after a failed lookup is found by the next invocation of the same container.
    _s3, sqs, _urls = aws
    queues = QueueLocator(sqs, STAGE)
    with pytest.raises(ConfigError, match=r"source 'late': no queue apilake-test-late: deploy the template"):
        queues.url("late")
    url = sqs.create_queue(QueueName=queue_name(STAGE, "late"))["QueueUrl"]
    assert queues.url("late") == url


def test_sends_are_batched_by_ten(aws: Any) -> None:
    _s3, sqs, _urls = aws
    calls: list[int] = []
    original = sqs.send_message_batch

    def counting(**kwargs: Any) -> Any:
        calls.append(len(kwargs["Entries"]))
        return original(**kwargs)

    sqs.send_message_batch = counting
    planner(aws, StubClient(total=250)).plan(
        PlanRequest("r1", date(2026, 11, 26), "manual", sources=["fan"]), Deadline.unbounded()
    )
    assert sorted(calls) == [5, 10, 10]


class CappedClient(StubClient):
    """A vendor that states ``total`` records and holds at most ``cap`` a page, whatever the size asked."""

    def __init__(self, total: int, cap: int) -> None:
        super().__init__(total)
        self.stated, self.cap = total, cap

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        self.requests.append(request)
        held = min(self.cap, int(request.params.get("per_page", self.cap)), self.stated)
        return VendorPage({"total": self.stated, "data": [{"n": n} for n in range(held)]}, {}, request.url, 0, 0.0)


def test_a_vendor_that_caps_the_page_size_is_planned_with_the_size_it_really_uses(aws: Any) -> None:
    # Given a vendor that states 95 records and holds 4 a page, where 10 are configured
    s3, sqs, urls = aws
    client = CappedClient(total=95, cap=4)
    # When the source is planned
    summary = planner(aws, client).plan(
        PlanRequest("r1", date(2026, 11, 26), "manual", sources=["fan"]), Deadline.unbounded()
    )
    # Then it is planned as 24 pages of 4, each work item carrying the size the vendor uses
    assert summary.messages == {"fan": 24}
    bodies = drain_bodies(sqs, urls["fan"])
    assert sorted(b["page"] for b in bodies) == list(range(1, 25)) and {b["page_size"] for b in bodies} == {4}
    # And its requests ask for that size
    page_2 = WorkItem.model_validate(next(b for b in bodies if b["page"] == 2))
    assert paginator_for(sources().get("fan")).request(page_2).params == {"page": "2", "per_page": "4"}
    # And the manifest holds what to reconcile with: the records stated, the size used, the cap
    manifest = Ledger(s3, "lake").read_manifest("r1")
    assert manifest is not None
    shard = manifest.sources["fan"].shards[0]
    assert (shard.expected_pages, shard.expected_records, shard.page_size, shard.capped) == (24, 95, 4, True)


@pytest.mark.parametrize(("total", "cap", "pages"), [(3, 4, 1), (95, 10, 10), (95, 50, 10)])
def test_a_vendor_that_holds_the_size_asked_or_the_whole_total_is_not_capped(
    aws: Any, total: int, cap: int, pages: int
) -> None:
    s3, sqs, urls = aws
    planner(aws, CappedClient(total=total, cap=cap)).plan(
        PlanRequest("r1", date(2026, 11, 26), "manual", sources=["fan"]), Deadline.unbounded()
    )
    bodies = drain_bodies(sqs, urls["fan"])
    assert len(bodies) == pages and all("page_size" not in b for b in bodies)
    manifest = Ledger(s3, "lake").read_manifest("r1")
    assert manifest is not None
    shard = manifest.sources["fan"].shards[0]
    assert (shard.expected_records, shard.page_size, shard.capped) == (total, 10, False)


def test_an_offset_vendor_that_caps_its_limit_is_asked_with_offsets_of_the_size_it_uses() -> None:
    source = sources(
        {
            "name": "offs",
            "base_url": "https://x.example.com",
            "records_path": "items",
            "pagination": {"type": "offset", "limit": 100, "total_path": "total"},
        }
    ).get("offs")
    paginator = paginator_for(source)
    probed = VendorPage({"total": 250, "items": [{}] * 25}, {}, "https://x.example.com", 0, 0.0)
    assert paginator.fan_out(probed) == FanOut(pages=10, records=250, page_size=25, capped=True)
    page_3 = WorkItem(run_id="r", source="offs", ingestion_date=date(2026, 11, 26), shard="all", page=3, page_size=25)
    assert paginator.request(page_3).params == {"offset": "50", "limit": "25"}
    # A work item written before the cap was known (no page_size) asks with the configured limit
    assert paginator.request(page_3.model_copy(update={"page_size": None})).params == {"offset": "200", "limit": "100"}
