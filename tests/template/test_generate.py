"""`make template`: only the generated region changes; what people wrote elsewhere in template.yaml stays."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import load_sources
from apilake.exceptions import ConfigError
from apilake.names import logical_id
from apilake.planner import parse_planner_event
from apilake_dev import paths
from apilake_dev.template.generate import BEGIN, END, main, parse_template
from tests.template.test_tools import CFN_LINT, CHECKOV, run, translated_template

TWO_NEW_SOURCES: list[dict[str, Any]] = [
    {
        "name": "billing-eu",
        "base_url": "https://billing.example.org",
        "path": "/v3/invoices",
        "records_path": "items",
        "pagination": {"type": "offset", "limit": 50, "total_path": "total"},
        "auth": {"type": "api_key", "secret_name": "vendors/billing", "location": "query", "name": "key"},
        "budget": {"requests_per_second": 20, "max_concurrency": 3},
        "worker": {"timeout_seconds": 120, "memory_mb": 256, "batch_size": 5, "max_receive_count": 12},
    },
    {
        "name": "tickets",
        "base_url": "https://helpdesk.example.net",
        "records_path": "results",
        "pagination": {"type": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more"},
        "auth": {"type": "bearer", "secret_name": "vendors/tickets"},
        "budget": {"requests_per_second": 2, "max_concurrency": 2},
    },
]
LAKE_BUCKET_TAG = "      Tags:\n        - Key: team\n          Value: data-platform\n"


def write_sources(path: Path, sources: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "sources": sources}, sort_keys=False))
    return path


@pytest.fixture
def edited_template(tmp_path: Path) -> Path:
    """template.yaml with a hand edit outside the region: a tag on the lake bucket."""
    text = paths.TEMPLATE.read_text()
    anchor = (
        "  LakeBucket:\n    Type: AWS::S3::Bucket\n    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n"
        "    Properties:\n"
    )
    assert anchor in text
    path = tmp_path / "template.yaml"
    path.write_text(text.replace(anchor, anchor + LAKE_BUCKET_TAG))
    return path


def test_a_hand_edit_survives_regeneration_for_other_sources(
    tmp_path: Path, edited_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a template edited by hand, and a sources file with two new sources instead of the old ones
    sources = write_sources(tmp_path / "sources.yaml", TWO_NEW_SOURCES)
    before = parse_template(edited_template.read_text())["Resources"]
    # When the region is regenerated
    assert main(["--sources", str(sources), "--template", str(edited_template)]) == 0
    text = edited_template.read_text()
    after = parse_template(text)["Resources"]
    # Then the edit is still there, and only the sources' resources changed
    assert after["LakeBucket"]["Properties"]["Tags"] == [{"Key": "team", "Value": "data-platform"}]
    fixed = {name for name in before if name in after and before[name] == after[name]}
    assert {"LakeBucket", "Planner", "PlannerRole", "Dashboard", "RawCrawler", "AthenaWorkGroup"} <= fixed
    assert {"BillingEuQueue", "BillingEuWorker", "TicketsQueue", "TicketsWorker"} <= set(after)
    # And it said what changed, resource by resource
    printed = capsys.readouterr().out
    assert "+ BillingEuWorker" in printed and "+ TicketsDlqDepthAlarm" in printed
    assert "~ PlannerSourcesPolicy" in printed
    for old in load_sources(paths.SOURCES).sources:
        assert f"- {logical_id(old.name, 'Worker')}" in printed
    # And no YAML anchors came with it
    assert "&id0" not in text and "*id0" not in text


def test_regenerating_twice_changes_nothing(tmp_path: Path, edited_template: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml", TWO_NEW_SOURCES)
    main(["--sources", str(sources), "--template", str(edited_template)])
    once = edited_template.read_text()
    assert main(["--sources", str(sources), "--template", str(edited_template), "--check"]) == 0
    main(["--sources", str(sources), "--template", str(edited_template)])
    assert edited_template.read_text() == once


def test_check_says_a_stale_region_and_shows_the_difference(
    tmp_path: Path, edited_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = write_sources(tmp_path / "sources.yaml", TWO_NEW_SOURCES[1:])
    assert main(["--sources", str(sources), "--template", str(edited_template), "--check"]) == 1
    captured = capsys.readouterr()
    assert "out of date with sources.yaml: run `make template`" in captured.err
    assert "+      QueueName: !Sub apilake-${Stage}-tickets" in captured.out


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {},
            {"Timeout": 300, "MemorySize": {"Ref": "WorkerMemorySize"}, "BatchSize": {"Ref": "WorkerBatchSize"}},
        ),
        (
            {"timeout_seconds": 120, "memory_mb": 256, "batch_size": 5},
            {"Timeout": 120, "MemorySize": 256, "BatchSize": 5},
        ),
    ],
)
def test_worker_settings_per_source(
    tmp_path: Path, edited_template: Path, settings: dict[str, Any], expected: dict[str, Any]
) -> None:
    source = {**TWO_NEW_SOURCES[1], "worker": {**settings, "max_receive_count": 9}}
    main(["--sources", str(write_sources(tmp_path / "s.yaml", [source])), "--template", str(edited_template)])
    resources = parse_template(edited_template.read_text())["Resources"]
    worker, queue = resources["TicketsWorker"]["Properties"], resources["TicketsQueue"]["Properties"]
    assert worker["Timeout"] == expected["Timeout"] and worker["MemorySize"] == expected["MemorySize"]
    assert worker["Events"]["Pages"]["Properties"]["BatchSize"] == expected["BatchSize"]
    assert queue["VisibilityTimeout"] == 6 * expected["Timeout"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 9


@pytest.mark.parametrize(
    ("damage", "found"),
    [(lambda t: t.replace(BEGIN + "\n", ""), "(found 0 and 1)"), (lambda t: t + END + "\n", "(found 1 and 2)")],
)
def test_a_template_without_its_region_markers_is_a_clear_error(tmp_path: Path, damage: Any, found: str) -> None:
    broken = tmp_path / "template.yaml"
    broken.write_text(damage(paths.TEMPLATE.read_text()))
    with pytest.raises(ConfigError, match=r"template\.yaml: expected one generated region") as raised:
        main(["--template", str(broken)])
    assert found in str(raised.value)


HOURLY = {"expression": "rate(1 hour)"}
WEEKLY_IN_BERLIN = {"expression": "cron(0 6 ? * MON *)", "timezone": "Europe/Berlin"}


def scheduled_sources() -> list[dict[str, Any]]:
    """Four sources: two hourly (one due sooner than the other), one weekly in Berlin, one on the stack's
    default schedule."""
    billing, tickets = TWO_NEW_SOURCES
    return [
        {**billing, "schedule": HOURLY},
        {**tickets, "schedule": WEEKLY_IN_BERLIN},
        {**tickets, "name": "tickets-archive"},
        {
            **tickets,
            "name": "tickets-sla",
            "schedule": {"expression": "rate(1  hour)", "timezone": "UTC", "complete_within_minutes": 30},
        },
    ]


def test_two_schedules_in_the_sources_file_give_two_schedules_with_their_sources(
    tmp_path: Path, edited_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given sources on two schedules of their own (the same hourly one written twice, due at different
    # times: the due time is the source's own), and one without
    sources = write_sources(tmp_path / "sources.yaml", scheduled_sources())
    # When the region is regenerated
    assert main(["--sources", str(sources), "--template", str(edited_template)]) == 0
    resources = parse_template(edited_template.read_text())["Resources"]
    # Then there are two schedules more than the planner's own, each invoking the planner as the Nightly does
    schedules = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::Scheduler::Schedule"}
    assert len(schedules) == 2
    nightly = resources["Planner"]["Properties"]["Events"]["Nightly"]["Properties"]
    planned: dict[str, list[str] | None] = {}
    for ident, schedule in schedules.items():
        target = schedule["Target"]
        assert target["Arn"] == {"Fn::GetAtt": ["Planner", "Arn"]}
        assert target["RoleArn"] == nightly["RoleArn"] == {"Fn::GetAtt": ["PlannerSchedulerRole", "Arn"]}
        assert target["RetryPolicy"] == nightly["RetryPolicy"]
        assert target["DeadLetterConfig"] == nightly["DeadLetterConfig"]
        assert schedule["FlexibleTimeWindow"] == nightly["FlexibleTimeWindow"]
        # And it is on or off with the Nightly, by ScheduleState (off when the container mode ingests instead)
        assert schedule["State"] == nightly["State"] == {"Ref": "ScheduleState"}
        # And its input is the Nightly's event plus its key and sources, which the planner turns into its run
        event, default = json.loads(target["Input"]), json.loads(nightly["Input"])
        assert {k: v for k, v in event.items() if k != "detail"} == {k: v for k, v in default.items() if k != "detail"}
        key = event["detail"]["schedule"]
        assert ident == f"PlannerSchedule{key}" and schedule["Name"] == {"Fn::Sub": f"apilake-${{Stage}}-planner-{key}"}
        fired = {**event, "time": "2026-11-26T06:00:00Z", "id": "x", "resources": ["arn"]}
        request = parse_planner_event(fired)
        assert request.run_id == f"sched-20261126T060000Z-{key}" and request.sources == event["detail"]["sources"]
        planned[schedule["ScheduleExpression"] + " " + schedule["ScheduleExpressionTimezone"]] = request.sources
    assert planned == {
        "rate(1 hour) UTC": ["billing-eu", "tickets-sla"],
        "cron(0 6 ? * MON *) Europe/Berlin": ["tickets"],
    }
    # And the source without a schedule follows the Nightly, whose event (hand-written) names no source
    assert json.loads(nightly["Input"])["detail"] == {}
    assert "tickets-archive" not in str(schedules)
    printed = capsys.readouterr().out
    assert printed.count("+ PlannerSchedule") == 2
    # And the completeness check's schedule is not switched off with them: it judges the container's runs too
    assert "State" not in resources["Completeness"]["Properties"]["Events"]["Check"]["Properties"]


def test_the_planners_schedules_are_enabled_unless_the_stack_says_otherwise() -> None:
    parameter = parse_template(paths.TEMPLATE.read_text())["Parameters"]["ScheduleState"]
    assert parameter["Default"] == "ENABLED" and parameter["AllowedValues"] == ["ENABLED", "DISABLED"]


def test_schedule_names_fit_the_scheduler_for_the_longest_stage(tmp_path: Path, edited_template: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml", scheduled_sources())
    main(["--sources", str(sources), "--template", str(edited_template)])
    template = parse_template(edited_template.read_text())
    longest = re.fullmatch(r"\^\[a-z\]\[a-z0-9\]\{1,(\d+)\}\$", template["Parameters"]["Stage"]["AllowedPattern"])
    assert longest is not None
    stage = "s" + "9" * int(longest[1])
    names = [
        r["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", stage)
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Scheduler::Schedule"
    ]
    assert len(set(names)) == len(names) == 2
    assert all(re.fullmatch(r"[0-9a-zA-Z-_.]{1,64}", name) for name in names), names


def test_without_schedules_the_region_has_none(tmp_path: Path, edited_template: Path) -> None:
    main(["--sources", str(write_sources(tmp_path / "s.yaml", TWO_NEW_SOURCES)), "--template", str(edited_template)])
    resources = parse_template(edited_template.read_text())["Resources"]
    assert not [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"]


@pytest.mark.slow
def test_the_tools_take_a_template_with_schedules(tmp_path: Path, edited_template: Path) -> None:
    # The project's own sources may have no schedule: lint and scan a template that has two.
    main(
        ["--sources", str(write_sources(tmp_path / "s.yaml", scheduled_sources())), "--template", str(edited_template)]
    )
    translated = tmp_path / "translated.json"
    translated.write_text(json.dumps(translated_template(edited_template)))
    for linted in (edited_template, translated):
        result = run(CFN_LINT, linted)
        assert result.returncode == 0, f"{linted.name}: {result.stdout}{result.stderr}"
    scan = run(CHECKOV, "-f", edited_template, "--framework", "cloudformation", "--skip-download", "--output", "json")
    report = json.loads(scan.stdout)
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["parsing_errors"] == 0


def test_a_missing_template_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "template.yaml"
    assert main(["--template", str(missing)]) == 2
    assert f"no template at {missing}" in capsys.readouterr().err
