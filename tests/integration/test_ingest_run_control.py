"""`apilake ingest`'s control of a run: the schedule's fire time as the run, one process a run (its lease), a longest
run (--max-seconds), a page failed permanently dead at once, a worker thread's fault stopping the run."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.folder_store import FolderClient
from apilake.ledger import Ledger
from apilake.runner import RunOutcome
from apilake.runner_lease import RunLease, RunLeaseHeldError, lease_key
from apilake_cli.main import main
from apilake_dev.vendors.fake import FakeVendor, Fault
from tests.integration.conftest import API_KEY, source_configs
from tests.integration.test_ingest import _run, _runner

SECRET = f"apilake/vendor={API_KEY}"


def _sources(vendor: FakeVendor, tmp_path: Path, names: tuple[str, ...], **changes: Any) -> Path:
    configs = [{**c, **changes} for c in source_configs(vendor.base_url) if c["name"] in names]
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": configs}, sort_keys=False))
    return path


def _ingest(home: Path, sources: Path, *extra: str) -> int:
    return main(["--home", str(home), "ingest", "--sources", str(sources), "--secret", SECRET, "--json", *extra])


def _document(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


# -- the schedule's fire time ----------------------------------------------------------------------------------
def test_a_scheduled_task_started_late_is_its_firings_run_and_a_second_task_of_it_resumes_it(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a schedule that fired at 23:59 on 2 January (the task starts whenever Fargate starts it)
    sources, home = _sources(vendor, tmp_path, ("offsets",)), tmp_path / "home"
    # When its task runs with the Scheduler's fire time
    assert _ingest(home, sources, "--scheduled", "--scheduled-time", "2026-01-02T23:59:00Z") == 0
    first = _document(capsys)
    # Then the run is the firing's: its id and ingestion date are the fire time's, not the task's start
    assert first["run_id"] == "sched-20260102T235900Z" and first["complete"] and first["pages"] > 0
    manifest = Ledger(FolderClient(home / "lake"), "local").read_manifest(first["run_id"])
    assert manifest is not None and manifest.ingestion_date.isoformat() == "2026-01-02"
    # When the Scheduler delivers the same firing again (a retry, a duplicate)
    assert _ingest(home, sources, "--scheduled", "--scheduled-time", "2026-01-02T23:59:00Z") == 0
    again = _document(capsys)
    # Then it is the same run, resumed: nothing fetched again
    assert (again["run_id"], again["resumed"], again["pages"]) == (first["run_id"], True, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduled-time", "2026-01-02T03:00:00Z"], "--scheduled-time goes with --scheduled"),
        (
            ["--scheduled", "--scheduled-time", "2026-01-02T03:00:00Z", "--run-id", "sched-20260102T030000Z"],
            "give --scheduled-time or --run-id, not both",
        ),
        (["--scheduled", "--scheduled-time", "2026-01-02T03:00:00"], "has no time zone"),
        (["--scheduled", "--scheduled-time", "yesterday"], "expected an ISO 8601 time"),
        (["--max-seconds", "0"], "expected a whole number of 1 or more"),
    ],
)
def test_a_fire_time_or_a_longest_run_that_cannot_be_used_is_refused(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # When `apilake ingest` is given it, then it refuses (argparse's exit 2, or ours), saying why
    try:
        code = _ingest(tmp_path / "home", _sources(vendor, tmp_path, ("offsets",)), *args)
    except SystemExit as stopped:
        code = int(stopped.code or 0)
    assert code == 2 and message in capsys.readouterr().err


# -- the run's lease -------------------------------------------------------------------------------------------
def _lease(lake: Path, run_id: str, host: str, pid: int, expires: datetime) -> None:
    holder = {"owner": "x", "host": host, "pid": pid, "expires_at": expires.isoformat(timespec="seconds")}
    FolderClient(lake).put_object(Bucket="local", Key=lease_key(run_id), Body=json.dumps(holder).encode())


def test_a_second_process_on_a_live_run_is_refused_and_a_lapsed_lease_is_taken_over(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources, home = _sources(vendor, tmp_path, ("offsets",)), tmp_path / "home"
    fire = "2026-01-02T03:00:00Z"
    run_id = "sched-20260102T030000Z"
    # Given another task (another host) running the firing's run, its lease live
    _lease(home / "lake", run_id, "ip-10-0-0-9", 7, datetime.now(UTC) + timedelta(minutes=2))
    # When a second task of the same firing starts
    code = _ingest(home, sources, "--scheduled", "--scheduled-time", fire)
    # Then it refuses, naming the holder, and writes nothing
    assert code == 2
    assert f"run {run_id}: another process runs it (host ip-10-0-0-9, pid 7" in capsys.readouterr().err
    assert not (home / "lake" / "raw").exists()
    # Given that lease lapsed (its task died without releasing it)
    _lease(home / "lake", run_id, "ip-10-0-0-9", 7, datetime.now(UTC) - timedelta(seconds=1))
    # Then the next task takes the run over, and releases the lease at its end (expired, kept)
    assert _ingest(home, sources, "--scheduled", "--scheduled-time", fire) == 0
    assert _document(capsys)["complete"]
    lease = json.loads((home / "lake" / lease_key(run_id)).read_text())
    assert datetime.fromisoformat(lease["expires_at"]) <= datetime.now(UTC)


def test_a_lease_of_a_process_of_this_host_that_is_gone_is_taken_at_once(tmp_path: Path) -> None:
    # Given a lease, still live, of a process of this host that no longer exists (killed with SIGKILL)
    gone = 2**22 + 12345
    while _alive(gone):
        gone += 1
    _lease(tmp_path, "r1", socket.gethostname(), gone, datetime.now(UTC) + timedelta(minutes=2))
    # When this process takes it, then a second runner of this process tries
    lease = RunLease(FolderClient(tmp_path), "local", "r1")
    lease.acquire()
    # Then the first takes it; the second is refused while the first holds it, and takes it once released
    with pytest.raises(RunLeaseHeldError, match=f"pid {os.getpid()}"):
        RunLease(FolderClient(tmp_path), "local", "r1").acquire()
    lease.release()
    RunLease(FolderClient(tmp_path), "local", "r1").acquire()


def test_a_lease_taken_over_stops_the_renewals_of_its_old_holder(tmp_path: Path) -> None:
    # Given a holder whose lease lapsed (it stalled) and another process that took it over
    client = FolderClient(tmp_path)
    stalled = RunLease(client, "local", "r1", seconds=0.0)
    stalled.acquire()
    RunLease(client, "local", "r1").acquire()
    # When the stalled one renews, then it learns it lost the lease (and its run stops: Runner._halt)
    assert stalled.renew() is False and stalled.lost


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the longest run -------------------------------------------------------------------------------------------
def test_a_run_past_max_seconds_stops_cleanly_says_what_is_missing_and_resumes(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a slow source (2 requests a second, 10 pages)
    slow = {"requests_per_second": 2, "max_concurrency": 2}
    sources, home = _sources(vendor, tmp_path, ("offsets",), budget=slow), tmp_path / "home"
    # When the run may last 1 second
    started = time.monotonic()
    code = _ingest(home, sources, "--run-id", "r1", "--max-seconds", "1", "--ingestion-date", "2026-01-02")
    document = _document(capsys)
    # Then it stops soon after (the page in flight finishes), not drained, exit 1, the ledger says what is missing
    assert code == 1 and time.monotonic() - started < 6
    assert document["timed_out"] and not document["drained"] and not document["complete"]
    assert 0 < document["pages"] < 10
    manifest = Ledger(FolderClient(home / "lake"), "local").read_manifest("r1")
    assert manifest is not None
    status = Ledger(FolderClient(home / "lake"), "local").status(manifest)
    assert not status.complete
    # When it runs again with its id, without a limit, then it completes the rest
    assert _ingest(home, sources, "--run-id", "r1") == 0
    again = _document(capsys)
    assert again["resumed"] and again["complete"] and again["pages"] == 10 - document["pages"]


# -- a page failed permanently ---------------------------------------------------------------------------------
def test_a_page_failed_permanently_is_dead_at_its_first_failure_and_a_retryable_one_is_retried(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    # Given a page answered 404 for ever, another 503 once, and 8 receives with 5 s between them
    sources = _sources(vendor, tmp_path, ("offsets",), worker={"max_receive_count": 8})
    vendor.inject("offset", "ds-f", 3, Fault("status", status=404), forever=True)
    vendor.inject("offset", "ds-f", 6, *[Fault("status", status=503)] * 8)
    # When the run ingests it
    started = time.monotonic()
    outcome = _run(_runner(sources, FolderClient(tmp_path / "lake"), "local", retry_delay_seconds=0.2))
    # Then the 404 page is dead after one request, without waiting out the retries; the 503 page landed on a retry
    assert [item.page for item in outcome.dead_items] == [3] and not outcome.ok
    assert vendor.requests_for("offset", "ds-f", 3) == 1 and time.monotonic() - started < 5
    assert vendor.requests_for("offset", "ds-f", 6) > 1 and outcome.pages == 9


# -- a worker thread's fault -----------------------------------------------------------------------------------
def test_a_worker_thread_failing_outside_its_batches_stops_the_run_with_its_error(
    vendor: FakeVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fault of ours in one source's worker threads, outside their batches (their settings)
    import apilake.runner
    from apilake.settings import WorkerSettings

    real = WorkerSettings

    def settings(**values: Any) -> Any:
        if values["source"] == "api-b":
            raise ValueError("injected: no settings for api-b")
        return real(**values)

    monkeypatch.setattr(apilake.runner, "WorkerSettings", settings)
    sources = _sources(vendor, tmp_path, ("offsets", "api-b"))
    # When the run ingests both sources (in a thread: without the fix it never ends)
    ended: list[RunOutcome] = []
    runner = _runner(sources, FolderClient(tmp_path / "lake"), "local")
    thread = threading.Thread(target=lambda: ended.append(_run(runner)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    # Then the run stops, with an error naming the source, the thread and the exception
    assert ended, "the run hung"
    error = ended[0].error or ""
    assert "source api-b: worker thread api-b-" in error and "ValueError: injected: no settings for api-b" in error
    assert not ended[0].ok
    # And `apilake ingest` exits 2 saying so
    # (one process: the fault is injected into this one's threads; a part's own are in test_ingest_processes)
    code = _ingest(tmp_path / "home", sources, "--run-id", "r2", "--processes", "1")
    assert code == 2 and "run r2 stopped: source api-b: worker thread" in capsys.readouterr().err
