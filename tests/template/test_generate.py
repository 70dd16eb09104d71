"""`make template`: only the generated region changes; what people wrote elsewhere in template.yaml stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import load_sources
from apilake.exceptions import ConfigError
from apilake.names import logical_id
from apilake_dev import paths
from apilake_dev.template.generate import BEGIN, END, main, parse_template

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
