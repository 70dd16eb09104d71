"""A lake folder `apilake ingest --lake DIR` wrote, read by `apilake status`, `report` and `query` (--lake), each
listing only the prefix it asks for (apilake.folder_store.FolderClient), never the whole lake."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake_cli.main import main
from apilake_dev.vendors.fake import FakeVendor
from tests.integration.conftest import API_KEY, source_configs

SECRET = f"apilake/vendor={API_KEY}"
RUN = "lake-run-1"


def _sources(vendor: FakeVendor, tmp_path: Path) -> Path:
    configs = [c for c in source_configs(vendor.base_url) if c["name"] in ("offsets", "api-b")]
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": configs}, sort_keys=False))
    return path


@pytest.fixture
def lake(vendor: FakeVendor, tmp_path: Path) -> Path:
    """A lake folder away from the home, written by `apilake ingest --lake`."""
    folder = tmp_path / "data" / "my-lake"
    code = main(["--home", str(tmp_path / "home"), "ingest", "--sources", str(_sources(vendor, tmp_path)), "--lake",
                 str(folder), "--run-id", RUN, "--secret", SECRET, "--ingestion-date", "2026-01-02"])  # fmt: skip
    assert code == 0
    return folder


def _scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders listed from now on (os.scandir: what Path.walk and Path.rglob use)."""
    scanned: list[str] = []
    real = os.scandir

    def scandir(path: Any = ".") -> Iterator[os.DirEntry[str]]:
        scanned.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return scanned


def test_status_report_and_query_read_a_lake_folder_given_with_lake(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a lake folder outside the home (the home has none)
    home = str(tmp_path / "home")
    capsys.readouterr()
    # When status, report and query are pointed at it
    assert main(["--home", home, "status", "--lake", str(lake), "--run", RUN, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert main(["--home", home, "report", "--lake", str(lake), "--run", RUN, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["--home", home, "query", "--lake", str(lake), "select count(*) as n from raw"]) == 0
    printed = capsys.readouterr().out
    # Then each reads that folder: the run complete, its stored report, its records
    assert status["complete"] is True, status
    assert report["from"] == "local" and Path(report["html"]).is_relative_to(lake)
    assert any(line.strip().isdigit() and int(line.strip()) > 0 for line in printed.splitlines()), printed


def test_status_of_a_lake_folder_lists_the_ledger_only_never_the_pages(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a lake folder with pages under raw/
    assert any((lake / "raw").rglob("*.json.gz"))
    scanned = _scanned(monkeypatch)
    # When `apilake status` reads it
    assert main(["--home", str(tmp_path / "home"), "status", "--lake", str(lake), "--run", RUN]) == 0
    # Then it listed folders of the ledger, and not one of raw/ (a walk of the whole lake per shard, before)
    assert scanned and not [path for path in scanned if Path(path).is_relative_to(lake / "raw")]
    assert not [path for path in scanned if Path(path) == lake]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--lake", "x", "--bucket", "b"], "give --lake (a lake folder) or --stack-name / --bucket"),
        (["query", "select 1", "--lake", "x", "--athena"], "--lake is the folder DuckDB reads, not for --athena"),
    ],
)
def test_a_lake_folder_and_a_deployed_lake_are_not_given_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["--home", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
