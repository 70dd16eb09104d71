"""`apilake ingest --scheduled`: the container's run is a scheduled run as the planner makes one, so the main stack's
completeness check judges it; resumed by its id; never in place of a manual run of that id, nor the other way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from apilake.completeness import CompletenessCheck
from apilake.config import load_sources
from apilake.folder_store import FolderClient
from apilake.ledger import Ledger, RunManifest
from apilake_dev.vendors.fake import FakeVendor
from tests.integration.conftest import source_configs
from tests.integration.test_ingest_run_control import _document, _ingest

NAMES = ("offsets", "api-b")


def _sources(vendor: FakeVendor, tmp_path: Path) -> Path:
    configs = [c for c in source_configs(vendor.base_url) if c["name"] in NAMES]
    # One of them with a schedule of its own (the Lambda stack's): the task's one schedule runs it too
    configs[0] = {**configs[0], "schedule": {"expression": "cron(0 3 * * ? *)"}}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": configs}, sort_keys=False))
    return path


def test_a_scheduled_ingest_is_the_planners_scheduled_run_and_the_check_judges_it(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources, home = _sources(vendor, tmp_path), tmp_path / "home"
    # When `apilake ingest --scheduled` runs (as the Fargate task's Command says)
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    code = _ingest(home, sources, "--scheduled")
    after = datetime.now(UTC)
    document = _document(capsys)
    # Then its id is the planner's for a schedule that fired this minute, and it is a scheduled run of every source
    assert code == 0 and document["complete"], document
    run_id = document["run_id"]
    minute = datetime.strptime(run_id, "sched-%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= minute <= after and minute.second == 0
    ledger = Ledger(FolderClient(home / "lake"), "local")
    manifest = ledger.read_manifest(run_id)
    assert manifest is not None and manifest.trigger == "schedule" and manifest.ingestion_date == minute.date()
    assert sorted(manifest.sources) == sorted(NAMES)
    # And the completeness check takes it for each source's latest scheduled run, once due
    check = CompletenessCheck(ledger, load_sources(sources), None, "dev", timedelta(minutes=5))
    due = check.due_runs(after + timedelta(hours=1), check.ledger_runs())
    assert [(m.run_id, sorted(names)) for m, names in due] == [(run_id, sorted(NAMES))]
    # When it is started again with its id, it resumes: nothing left to land, complete
    assert _ingest(home, sources, "--scheduled", "--run-id", run_id) == 0
    again = _document(capsys)
    assert again["resumed"] and again["complete"] and again["pages"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduled", "--run-id", "manual-1"], "run id 'manual-1' is not a scheduled run's"),
        (["--scheduled", "--ingestion-date", "2026-01-02"], "takes its ingestion date from its scheduled time"),
        (["--run-id", "sched-20260102T030000Z"], "its id cannot start with 'sched-'"),
    ],
)
def test_scheduled_and_manual_ids_stay_apart(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _ingest(tmp_path / "home", _sources(vendor, tmp_path), *args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stored", "run_id", "args"),
    [
        ("manual", "sched-20260102T030000Z", ["--scheduled"]),  # a manual run's manifest at a scheduled id
        ("schedule", "manual-20260102-1", []),  # and a scheduled run's at a manual id
    ],
)
def test_a_run_never_replaces_one_of_the_other_trigger(
    vendor: FakeVendor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stored: str,
    run_id: str,
    args: list[str],
) -> None:
    # Given a run's manifest of one trigger
    home = tmp_path / "home"
    ledger = Ledger(FolderClient(home / "lake"), "local")
    created = datetime(2026, 1, 2, 3, tzinfo=UTC)
    ledger.write_manifest(
        RunManifest.model_validate(
            {"run_id": run_id, "ingestion_date": "2026-01-02", "created_at": created, "trigger": stored, "sources": {}}
        )
    )
    # When `apilake ingest` of the other trigger is given its id
    code = _ingest(home, _sources(vendor, tmp_path), "--run-id", run_id, *args)
    # Then it refuses, and the manifest is as it was
    other = "schedule" if stored == "manual" else "manual"
    assert code == 2
    assert f"{other} run {run_id}: a {stored} run has that id" in capsys.readouterr().err
    kept = ledger.read_manifest(run_id)
    assert kept is not None and kept.trigger == stored and kept.sources == {}
