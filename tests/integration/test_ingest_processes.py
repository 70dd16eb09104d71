"""`apilake ingest --processes N`: a run's sources spread over processes in whole families (apilake.runner_parts),
to a lake folder and to moto's server; killed and resumed; a part that fails; a run past its longest time."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import apilake_cli.ingest
from apilake.folder_store import FolderClient
from apilake.ledger import Ledger
from apilake.runner_parts import PartLauncher
from apilake_cli.ingest import usable_cpus
from apilake_cli.main import main
from apilake_dev.local.aws import LocalAws
from apilake_dev.vendors.fake import FakeVendor
from apilake_dev.vendors.github_like import GitHubLikeVendor, Repo
from apilake_dev.vendors.github_like import sources as github_sources
from tests.integration.conftest import API_KEY
from tests.integration.test_ingest import ROOT, RUN, SECRET, _expected_keys, _folder_pages, _records, _sources
from tests.integration.test_pipeline import EXPECTED_PAGES, INGESTION, expected_records

FOUR = ["api-a", "api-b", "offsets", "one-page"]


def _ingest(home: Path, sources: Path, *extra: str) -> int:
    return main(["--home", str(home), "ingest", "--sources", str(sources), "--run-id", RUN, "--secret", SECRET,
                 "--ingestion-date", INGESTION.isoformat(), "--json", *extra])  # fmt: skip


def _document(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def _pages(names: list[str]) -> int:
    return sum(n for name in names for n in EXPECTED_PAGES[name][1].values())


def _every_record_once(lake: Path, names: list[str]) -> None:
    for source in names:
        pages = _folder_pages(lake, source)
        assert sorted(pages) == _expected_keys(source) and _records(pages) == expected_records(source), source


def test_sources_spread_over_processes_land_every_record_once_and_the_summary_counts_every_part(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given four unrelated sources
    sources, home = _sources(vendor, tmp_path, FOUR), tmp_path / "home"
    # When they are ingested by two processes
    code = _ingest(home, sources, "--processes", "2")
    document = _document(capsys)
    # Then two processes ran them, every page of every source landed once, and the summary counts both parts
    assert code == 0 and document["complete"] and document["processes"] == 2
    assert document["pages"] == _pages(FOUR)
    assert {name: tally["pages"] for name, tally in document["sources"].items()} == {
        name: _pages([name]) for name in FOUR
    }
    assert all(tally["records"] > 0 for tally in document["sources"].values())
    _every_record_once(home / "lake", FOUR)
    # And the ledger's status agrees (the run's process judged the whole run)
    ledger = Ledger(FolderClient(home / "lake"), "local")
    manifest = ledger.read_manifest(RUN)
    assert manifest is not None and ledger.status(manifest).complete


def test_one_process_runs_them_all_when_asked(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources, home = _sources(vendor, tmp_path, FOUR), tmp_path / "home"
    assert _ingest(home, sources, "--processes", "1") == 0
    document = _document(capsys)
    assert document["processes"] == 1 and document["pages"] == _pages(FOUR)


def test_a_parent_and_its_children_are_worked_by_one_process_and_land_once(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given GitHub-like repos -> issues (one family) beside an unrelated source, and two processes
    repos = [Repo(f"owner{n % 3}", f"repo-{n}", n * 5 % 13) for n in range(9)]
    with GitHubLikeVendor(repos, token=API_KEY) as github:
        configs = [*github_sources(github.base_url), *_configs(vendor, ["offsets"])]
        path = tmp_path / "sources.json"
        path.write_text(json.dumps({"version": 1, "sources": configs}))
        home = tmp_path / "home"
        # When they are ingested with two processes
        code = _ingest(home, path, "--processes", "2")
        document = _document(capsys)
        # Then both processes ran, and every issue of every repo landed once (the children were followed)
        assert code == 0 and document["complete"] and document["processes"] == 2
        issues = [
            (i["repository_url"].split("/repos/", 1)[1], i["number"])
            for i in _records(_folder_pages(home / "lake", "issues"))
        ]
        assert sorted(issues) == sorted(github.state.issues()) and len(set(issues)) == len(issues)
        _every_record_once(home / "lake", ["offsets"])


def test_a_run_whose_process_is_killed_stops_its_parts_and_resumes_landing_each_record_once(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    # Given a slow budget, so that the run is killed (SIGKILL) while both processes are landing pages
    slow = {"requests_per_second": 4, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ["offsets", "api-b"], budget=slow), tmp_path / "home"
    command = [sys.executable, "-m", "apilake_cli.main", "--home", str(home), "ingest", "--sources", str(sources),
               "--run-id", RUN, "--secret", SECRET, "--ingestion-date", INGESTION.isoformat(),
               "--processes", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/common'}:{ROOT / 'devtools'}"}
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    deadline = time.monotonic() + 60
    while len(list((home / "lake" / "raw").rglob("*.json.gz"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Then its part, its stdin closed, takes no page any more and ends (the folder's lock is free again)
    assert _lock_freed(home / "lake", within=15), "the part of a killed run went on"
    landed = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (home / "lake" / "raw").rglob("*.json.gz")}
    assert 5 <= len(landed) < _pages(["offsets", "api-b"])
    # When the same run is started again, at full speed, with two processes
    fast = _sources(vendor, tmp_path, ["offsets", "api-b"])
    assert _ingest(home, fast, "--processes", "2", "--log-file", "-") == 0
    # Then every record is there once, and no page that had landed was written again
    for path, identity in landed.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, path
    _every_record_once(home / "lake", ["offsets", "api-b"])


def test_a_part_that_fails_stops_the_run_with_its_error_and_a_resume_completes_it(
    vendor: FakeVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given parts whose process ends at once without a result (a fault of ours in the part)
    real = _parts_run(monkeypatch, "import sys; sys.stdin.readline(); sys.exit(3)")
    slow = {"requests_per_second": 5, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ["offsets", "api-b"], budget=slow), tmp_path / "home"
    # When the run starts with two processes
    code = _ingest(home, sources, "--processes", "2")
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    # Then it stops, exit 2, naming the part, its sources and why; this process's part stopped too
    assert code == 2 and not document["complete"]
    assert "process part 1 (" in document["error"] and "ended without its result (exit code 3)" in document["error"]
    assert document["pages"] < _pages(["offsets", "api-b"])
    assert f"run {RUN} stopped: process part 1" in captured.err
    # When it is resumed (the parts' program as it should be)
    monkeypatch.setattr(apilake_cli.ingest, "_launcher", real)
    assert _ingest(home, _sources(vendor, tmp_path, ["offsets", "api-b"]), "--processes", "2") == 0
    # Then the run is complete, every record once
    _every_record_once(home / "lake", ["offsets", "api-b"])


def test_a_part_answering_outside_the_protocol_is_stopped_and_stops_the_run(
    vendor: FakeVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given parts that print something else than the protocol's JSON lines, then hang
    _parts_run(monkeypatch, "import sys, time; sys.stdin.readline(); print('not json', flush=True); time.sleep(120)")
    slow = {"requests_per_second": 5, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ["offsets", "api-b"], budget=slow), tmp_path / "home"
    # When the run starts with two processes
    started = time.monotonic()
    code = _ingest(home, sources, "--processes", "2")
    document = _document(capsys)
    # Then the part is stopped at once (not waited for), and the run ends, exit 2, saying why
    assert code == 2 and time.monotonic() - started < 30
    assert "process part 1 (" in document["error"] and "JSONDecodeError" in document["error"]


def test_a_run_with_parts_past_max_seconds_stops_every_part_and_resumes(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two slow sources (2 requests a second each)
    slow = {"requests_per_second": 2, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ["offsets", "api-b"], budget=slow), tmp_path / "home"
    # When the run may last 1 second, with two processes
    started = time.monotonic()
    code = _ingest(home, sources, "--max-seconds", "1", "--processes", "2")
    document = _document(capsys)
    # Then both parts stop soon after (the pages in flight finish), exit 1, not an error
    assert code == 1 and time.monotonic() - started < 30
    assert document["timed_out"] and not document["complete"] and document["error"] is None
    assert document["processes"] == 2 and 0 < document["pages"] < _pages(["offsets", "api-b"])
    # When resumed without a limit, then the rest lands
    assert _ingest(home, _sources(vendor, tmp_path, ["offsets", "api-b"]), "--processes", "2") == 0
    again = _document(capsys)
    assert again["resumed"] and again["complete"]
    assert again["pages"] == _pages(["offsets", "api-b"]) - document["pages"]
    _every_record_once(home / "lake", ["offsets", "api-b"])


def test_parts_write_to_a_bucket_too(vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given moto's server with the lake bucket
    with LocalAws() as aws:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="lake")
        sources = _sources(vendor, tmp_path, FOUR)
        # When two processes ingest four sources into it
        code = _ingest(tmp_path / "home", sources, "--bucket", "lake", "--endpoint-url", aws.endpoint, "--processes",
                       "2")  # fmt: skip
        document = _document(capsys)
        # Then every page landed once, under its key
        assert code == 0 and document["complete"] and document["processes"] == 2
        for source in FOUR:
            listed = s3.list_objects_v2(Bucket="lake", Prefix=f"raw/source={source}/")["Contents"]
            blobs = {o["Key"]: s3.get_object(Bucket="lake", Key=o["Key"])["Body"].read() for o in listed}
            assert sorted(blobs) == _expected_keys(source) and _records(blobs) == expected_records(source)


@pytest.mark.parametrize("given", ["0", "-1", "two", ""])
def test_processes_must_be_a_whole_number_or_auto(
    given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--home", str(tmp_path), "ingest", "--processes", given])
    assert exit_.value.code == 2
    assert "--processes: expected a whole number of 1 or more" in capsys.readouterr().err


def _parts_run(monkeypatch: pytest.MonkeyPatch, code: str) -> Any:
    """The parts' processes run ``code`` (python -c) instead of a part; the real launcher maker, to put back."""
    real = apilake_cli.ingest._launcher

    def launcher(*args: Any) -> PartLauncher:
        made = real(*args)
        made.command = [sys.executable, "-c", code]
        return made

    monkeypatch.setattr(apilake_cli.ingest, "_launcher", launcher)
    return real


def _configs(vendor: FakeVendor, names: list[str]) -> list[dict[str, Any]]:
    from tests.integration.conftest import source_configs

    return [c for c in source_configs(vendor.base_url) if c["name"] in names]


def _lock_freed(lake: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    fd = os.open(lake / ".lock", os.O_RDWR)
    try:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.1)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        pytest.param("max 100000\n", None, id="no quota: the CPUs it may run on"),
        pytest.param("50000 100000\n", 1, id="half a CPU: one process"),
        pytest.param("100000 100000\n", 1, id="one CPU"),
        pytest.param("150000 100000\n", 2, id="1.5 CPUs: two, at most those it may run on"),
        pytest.param("garbled\n", None, id="unreadable: the CPUs it may run on"),
    ],
)
def test_auto_processes_follow_the_cgroups_cpu_quota(cpu_max: str, expected: int | None, tmp_path: Path) -> None:
    # Given a cgroup's cpu.max (a container's --cpus, an ECS task's CPU units)
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    cpus = len(os.sched_getaffinity(0))
    # When auto picks the processes / Then no more than the quota allows, nor than the CPUs it may run on
    assert usable_cpus(path) == (cpus if expected is None else min(expected, cpus))
    assert usable_cpus(tmp_path / "none") == cpus
