"""`apilake ingest`: the whole run in one process (apilake.runner) against the fake vendor, to a lake folder and to
moto's server; interrupted and resumed; a vendor asking to wait; a page that never lands."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.auth import CredentialStore
from apilake.config import load_sources
from apilake.folder_store import FolderClient
from apilake.http import new_session
from apilake.lake import page_key
from apilake.ledger import Ledger
from apilake.observability import logger
from apilake.planner import parse_planner_event
from apilake.runner import Runner, RunOutcome
from apilake_cli.ingest import LocalSecrets
from apilake_cli.main import main
from apilake_dev.local.aws import LocalAws
from apilake_dev.vendors.fake import FakeVendor, Fault
from apilake_dev.vendors.github_like import GitHubLikeVendor, Repo
from apilake_dev.vendors.github_like import sources as github_sources
from tests.integration.conftest import API_KEY, DATASETS, source_configs
from tests.integration.test_pipeline import EXPECTED_PAGES, INGESTION, expected_records

ROOT = Path(__file__).resolve().parents[2]
RUN = "ingest-run-1"
SECRET = f"apilake/vendor={API_KEY}"


def _sources(vendor: FakeVendor, tmp_path: Path, names: list[str] | None = None, **changes: Any) -> Path:
    configs = [{**c, **changes} for c in source_configs(vendor.base_url) if names is None or c["name"] in names]
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": configs}, sort_keys=False))
    return path


def _runner(sources: Path, client: Any, bucket: str, **options: Any) -> Runner:
    credentials = CredentialStore(LocalSecrets({"apilake/vendor": API_KEY}, None))
    return Runner(load_sources(sources), client, bucket, new_session(), credentials, echo=lambda _: None, **options)


def _run(runner: Runner, run_id: str = RUN) -> RunOutcome:
    return runner.run(parse_planner_event({"run_id": run_id, "ingestion_date": INGESTION.isoformat()}))


def _records(blobs: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for key in sorted(blobs) for line in gzip.decompress(blobs[key]).splitlines()]


def _folder_pages(lake: Path, source: str) -> dict[str, bytes]:
    folder = lake / "raw" / f"source={source}"
    return {path.relative_to(lake).as_posix(): path.read_bytes() for path in folder.rglob("*.json.gz")}


def _expected_keys(source: str) -> list[str]:
    _, shards = EXPECTED_PAGES[source]
    return sorted(page_key(source, INGESTION, s, p) for s, pages in shards.items() for p in range(1, pages + 1))


def test_ingest_to_a_folder_lands_every_record_once_and_status_reads_it(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given every pagination style in one sources file
    sources, home = _sources(vendor, tmp_path), tmp_path / "home"
    # When `apilake ingest` runs them all at once into the home's lake folder
    level = logger.log_level
    code = main(["--home", str(home), "ingest", "--sources", str(sources), "--run-id", RUN, "--secret", SECRET,
                 "--ingestion-date", INGESTION.isoformat()])  # fmt: skip
    printed = capsys.readouterr().out
    assert logger.log_level == level  # its --log-level held for its run only (the next command of a process logs)
    # Then the run is complete, and each source's pages are the vendor's records, each once, under their keys
    assert code == 0, printed
    lake = home / "lake"
    for source in DATASETS:
        pages = _folder_pages(lake, source)
        assert sorted(pages) == _expected_keys(source)
        assert _records(pages) == expected_records(source)
    # And the files are the lake's only: no temporary file, the metadata and the writer's lock apart from raw/, ledger/
    assert sorted(p.name for p in lake.iterdir()) == [".lock", ".lock-cas", ".meta", "ledger", "raw"]
    assert all(p.name.endswith(".json.gz") for p in (lake / "raw").rglob("*") if p.is_file())
    # And the summary says what landed, and `apilake status` reads the same ledger from the folder
    total = sum(n for _, shards in EXPECTED_PAGES.values() for n in shards.values())
    assert f"run {RUN}: drained" in printed and "complete: yes" in printed and f"ingest: {total} pages" in printed
    assert (lake / f"ledger/runs/run={RUN}/report.html").is_file()
    assert main(["--home", str(home), "status", "--run", RUN]) == 0
    assert API_KEY not in printed + "".join(p.read_text() for p in (lake / "ledger").rglob("*.json"))


def test_ingest_to_s3_on_motos_server_lands_the_same_keys_with_their_metadata(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    with LocalAws() as aws:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="lake")
        outcome = _run(_runner(_sources(vendor, tmp_path), s3, "lake"))
        total = sum(n for _, shards in EXPECTED_PAGES.values() for n in shards.values())
        assert outcome.ok and outcome.pages == total and outcome.dead_items == []
        for source in DATASETS:
            listed = s3.list_objects_v2(Bucket="lake", Prefix=f"raw/source={source}/")["Contents"]
            blobs = {o["Key"]: s3.get_object(Bucket="lake", Key=o["Key"])["Body"].read() for o in listed}
            assert sorted(blobs) == _expected_keys(source) and _records(blobs) == expected_records(source)
            metadata = s3.head_object(Bucket="lake", Key=listed[0]["Key"])["Metadata"]
            assert metadata["run-id"] == RUN and len(metadata["sha256"]) == 64
        manifest = Ledger(s3, "lake").read_manifest(RUN)
        assert manifest is not None and Ledger(s3, "lake").status(manifest).complete


def test_a_run_stopped_midway_resumes_from_the_ledger_and_rewrites_nothing(vendor: FakeVendor, tmp_path: Path) -> None:
    # Given a fan-out and a chain, stopped after a few pages (one worker each, so the stop comes early)
    sources, lake = _sources(vendor, tmp_path, ["offsets", "api-b"]), tmp_path / "lake"
    first = _run(_runner(sources, FolderClient(lake), "local", workers_per_source=1, stop_after_pages=4))
    assert not first.drained and first.status is not None and not first.status.complete
    landed = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (lake / "raw").rglob("*.json.gz")}
    assert 4 <= len(landed) < 15
    recorded = set(Ledger(FolderClient(lake), "local").landed_details("offsets", RUN, "all"))
    # When the same run is started again
    second = _run(_runner(sources, FolderClient(lake), "local"))
    # Then it resumed (not planned again), landed the rest, and left every page that had landed untouched
    assert second.resumed and second.ok
    for path, identity in landed.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, path
    for source in ("offsets", "api-b"):
        pages = _folder_pages(lake, source)
        assert sorted(pages) == _expected_keys(source) and _records(pages) == expected_records(source)
    # And the pages the first run recorded were not asked for again (page 1 twice: the planner's probe, then its worker)
    for page in recorded:
        assert vendor.requests_for("offset", "ds-f", page) == (2 if page == 1 else 1), page


def test_a_run_killed_mid_page_resumes_and_lands_each_record_once(vendor: FakeVendor, tmp_path: Path) -> None:
    # Given a slow budget, so that the run is killed (SIGKILL) while pages are landing
    slow = {"requests_per_second": 4, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ["offsets", "api-b"], budget=slow), tmp_path / "home"
    command = [sys.executable, "-m", "apilake_cli.main", "--home", str(home), "ingest", "--sources", str(sources),
               "--run-id", RUN, "--secret", SECRET, "--ingestion-date", INGESTION.isoformat()]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/common'}:{ROOT / 'devtools'}"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while len(list((home / "lake" / "raw").rglob("*.json.gz"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    landed = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (home / "lake" / "raw").rglob("*.json.gz")}
    assert 5 <= len(landed) < 15
    # When the same run is started again, at full speed
    fast = str(_sources(vendor, tmp_path, ["offsets", "api-b"]))
    code = main(["--home", str(home), "ingest", "--sources", fast, "--run-id", RUN, "--secret", SECRET,
                 "--ingestion-date", INGESTION.isoformat(), "--log-file", "-"])  # fmt: skip
    # Then the run is complete, every record is there once, and no page that had landed was written again
    assert code == 0
    for path, identity in landed.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, path
    for source in ("offsets", "api-b"):
        pages = _folder_pages(home / "lake", source)
        assert sorted(pages) == _expected_keys(source) and _records(pages) == expected_records(source)


def test_a_vendor_asking_to_wait_is_waited_for_inline_or_in_the_queue(vendor: FakeVendor, tmp_path: Path) -> None:
    # Given a 429 with Retry-After 1 (waited inline) and one with Retry-After 2, past the inline limit (parked)
    retries = {"max_attempts": 4, "base_delay_seconds": 0.01, "max_delay_seconds": 3, "max_inline_wait_seconds": 1}
    sources = _sources(vendor, tmp_path, ["offsets"], retries=retries)
    vendor.inject("offset", "ds-f", 2, Fault.throttle(retry_after=1))
    vendor.inject("offset", "ds-f", 5, Fault.throttle(retry_after=2))
    # When the run ingests it
    started = time.monotonic()
    outcome = _run(_runner(sources, FolderClient(tmp_path / "lake"), "local"))
    # Then every page landed, the parked one after its wait, and the 429s are counted
    assert outcome.ok and outcome.pages == 10 and time.monotonic() - started >= 2
    assert outcome.sources["offsets"].throttled == 2
    manifest = Ledger(FolderClient(tmp_path / "lake"), "local").read_manifest(RUN)
    assert manifest is not None
    details = Ledger(FolderClient(tmp_path / "lake"), "local").landed_details("offsets", RUN, "all")
    assert details[5]["parks"] == 1 and details[2]["throttled"] == 1 and details[2]["parks"] == 0


def test_a_page_that_fails_on_every_receive_is_dead_and_the_run_incomplete(vendor: FakeVendor, tmp_path: Path) -> None:
    sources = _sources(vendor, tmp_path, ["offsets"], worker={"max_receive_count": 2})
    vendor.inject("offset", "ds-f", 3, Fault("status", status=500), forever=True)
    outcome = _run(_runner(sources, FolderClient(tmp_path / "lake"), "local", retry_delay_seconds=0.01))
    assert not outcome.ok and [item.page for item in outcome.dead_items] == [3]
    assert outcome.status is not None and not outcome.status.complete
    shard = outcome.status.sources[0].shards[0]
    assert shard.missing_pages == [3] and "500" in shard.why_missing(3)


def test_a_parents_pages_announce_its_childrens_work_and_every_child_record_lands_once(tmp_path: Path) -> None:
    # Given GitHub-like repos (the parent, 3 pages of 5) and each repo's issues (its child, 10 a page)
    repos = [Repo(f"owner{n % 4}", f"repo-{n}", n * 3 % 17) for n in range(13)]
    with GitHubLikeVendor(repos, token=API_KEY) as vendor:
        path = tmp_path / "sources.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "sources": github_sources(vendor.base_url)}, sort_keys=False))
        lake = tmp_path / "lake"
        # When `apilake ingest` runs the parent (its child follows)
        outcome = _run(_runner(path, FolderClient(lake), "local"))
        # Then the run is complete, every repo and every issue landed exactly once
        assert outcome.ok, (outcome.dead_items, outcome.status)
        assert _records(_folder_pages(lake, "repos")) == [r for page in _repo_pages(vendor) for r in page]
        issues = [
            (i["repository_url"].split("/repos/", 1)[1], i["number"]) for i in _records(_folder_pages(lake, "issues"))
        ]
        assert sorted(issues) == sorted(vendor.state.issues()) and len(set(issues)) == len(issues)
        # And the child's shards are those its parent announced, one per repo, counted in the run's figures
        assert outcome.status is not None and outcome.status.complete
        child = next(source for source in outcome.status.sources if source.source == "issues")
        assert child.parent == "repos" and len(child.shards) == len(repos)
        assert outcome.sources["issues"].records == len(vendor.state.issues())


def test_a_parent_child_run_stopped_midway_resumes_its_childrens_lost_work(tmp_path: Path) -> None:
    # Given a parent-child run stopped after a few pages: child work announced by landed repos pages was in memory
    repos = [Repo(f"owner{n % 3}", f"repo-{n}", n % 11) for n in range(12)]
    with GitHubLikeVendor(repos, token=API_KEY) as vendor:
        path = tmp_path / "sources.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "sources": github_sources(vendor.base_url)}, sort_keys=False))
        lake = tmp_path / "lake"
        first = _run(_runner(path, FolderClient(lake), "local", workers_per_source=1, stop_after_pages=3))
        assert not first.drained and first.status is not None and not first.status.complete
        child = next(source for source in first.status.sources if source.source == "issues")
        assert any(shard.missing_pages[:1] == [1] for shard in child.shards)  # announced, its page 1 not landed
        landed = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (lake / "raw").rglob("*.json.gz")}
        # When the same run is started again
        second = _run(_runner(path, FolderClient(lake), "local"))
        # Then it resumed, and every issue of every repo landed exactly once, no landed page written again
        assert second.resumed and second.ok, (second.dead_items, second.status)
        issues = [
            (i["repository_url"].split("/repos/", 1)[1], i["number"]) for i in _records(_folder_pages(lake, "issues"))
        ]
        assert sorted(issues) == sorted(vendor.state.issues()) and len(set(issues)) == len(issues)
        for page, identity in landed.items():
            assert (page.stat().st_ino, page.stat().st_mtime_ns) == identity, page


def _repo_pages(vendor: GitHubLikeVendor) -> list[list[dict[str, Any]]]:
    records = [vendor.state.repo_record(i, vendor.base_url) for i in range(len(vendor.state.repos))]
    return [records[i : i + 5] for i in range(0, len(records), 5)]


def test_the_run_prints_each_sources_metrics_once_at_its_end_and_none_a_page(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two sources, one page of which fails once (a retry)
    sources = _sources(vendor, tmp_path, ["offsets", "api-b"])
    vendor.inject("offset", "ds-f", 2, Fault("status", status=503))
    capsys.readouterr()
    # When the run ingests them
    outcome = _run(_runner(sources, FolderClient(tmp_path / "lake"), "local"))
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    # Then each source's counts are in one EMF document (source and service, as a worker's), the run's figures
    assert outcome.ok and outcome.pages == 15
    by_source = {d["source"]: d for d in documents if "source" in d}
    assert len(by_source) == len([d for d in documents if "source" in d]) == 2
    for name, tally in outcome.sources.items():
        document = by_source[name]
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["source", "service"]]
        assert document["pages_ingested_total"] == [float(tally.pages)]
        assert document["records_ingested_total"] == [float(tally.records)]
        assert document["retries_total"] == [float(tally.retries)]
    assert by_source["offsets"]["retries_total"] == [1.0] and by_source["api-b"]["failures_total"] == [0.0]
    # And the stack's pages landed and failed, once each; nothing else (no document a page or a request)
    stack = [d for d in documents if "source" not in d]
    assert [(d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], d["service"]) for d in stack] == [
        ("ingest_pages_landed", "apilake"),
        ("ingest_pages_failed", "apilake"),
    ]
    assert (stack[0]["ingest_pages_landed"], stack[1]["ingest_pages_failed"]) == ([15.0], [0.0])
    assert len(documents) == 4
