"""make bench-peers: the record count that passes or fails a contender, the fake API's one-time 429s,
the naive loop against it, and the ratios of the table."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.peers import naive, vendor
from bench.peers.contenders import Contender, Workload
from bench.peers.count import dlt_tables, expected_ids, folder_blobs, tally
from bench.peers.report import Trial, acceptance, rows_of


def _page(ids: list[str]) -> bytes:
    return json.dumps({"data": [{"id": i} for i in ids], "meta": {"total": 4}}).encode()


def _lines(ids: list[str]) -> bytes:
    return "".join(json.dumps({"id": i}) + "\n" for i in ids).encode()


@pytest.mark.parametrize(
    ("blobs", "missing", "repeated", "unexpected"),
    [
        ([gzip.compress(_page(["s-0000000", "s-0000001"])), _lines(["s-0000002", "s-0000003"])], 0, 0, 0),
        ([_page(["s-0000000", "s-0000001"]), gzip.compress(_lines(["s-0000001", "s-0000003"]))], 1, 1, 0),
        ([_lines(["s-0000000", "s-0000001", "s-0000002", "s-0000003", "other"])], 0, 0, 1),
        ([_page(["s-0000000"])], 3, 0, 0),
    ],
    ids=["each once", "one missing one twice", "one unexpected", "three missing"],
)
def test_a_contender_passes_only_when_every_record_landed_exactly_once(
    blobs: list[bytes], missing: int, repeated: int, unexpected: int
) -> None:
    # given files as the contenders write them (a page as sent, or JSON lines; gzip or not)
    # when they are counted against the ids the API served
    landed = tally(blobs, expected_ids(["s"], 4))
    # then what is missing, repeated or unexpected is told, and only a clean count passes
    assert (landed.missing, landed.repeated, landed.unexpected) == (missing, repeated, unexpected)
    assert landed.exactly_once == (missing == repeated == unexpected == 0)
    assert ("NOT exactly once" in landed.describe()) != landed.exactly_once


def test_dlt_files_are_counted_from_the_resources_own_tables_only(tmp_path: Path) -> None:
    # given dlt's layout: a resource's table, its child table of tags, and dlt's own tables
    for table, ids in (("a_0", ["s-0000000"]), ("a_0__tags", ["s-0000000"]), ("_dlt_loads", ["x"])):
        (tmp_path / "peers" / table).mkdir(parents=True)
        (tmp_path / "peers" / table / "1.abc.jsonl.gz").write_bytes(gzip.compress(_lines(ids)))
    # when the resource's files are counted
    landed = tally(folder_blobs(tmp_path, dlt_tables(["a_0"])), expected_ids(["s"], 1))
    # then the record is there once (the child table and dlt's bookkeeping are not records)
    assert landed.exactly_once and landed.files == 1


@pytest.fixture
def api() -> Iterator[str]:
    server = vendor._Server(("127.0.0.1", 0), vendor._Handler)
    server.state = vendor.PeerState(["s", "t"], pages=3, records=5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield f"http://{host!s}:{port}"
    server.shutdown()
    server.server_close()


def test_an_armed_page_answers_429_with_retry_after_once_then_its_records(api: str) -> None:
    # given the API armed so that 1 page in 2 answers 429 once (page 1 of each dataset, then 3)
    assert requests.post(f"{api}/__arm", params={"throttle_every": 2}, timeout=5).json() == {"armed": 4}
    # when page 1 is asked for twice
    first = requests.get(f"{api}/page_number/s", params={"page": 1, "per_page": 5}, timeout=5)
    second = requests.get(f"{api}/page_number/s", params={"page": 1, "per_page": 5}, timeout=5)
    # then a 429 with Retry-After: 1, then the page; the API counted both
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert [r["id"] for r in second.json()["data"]] == [f"s-{i:07d}" for i in range(5)]
    assert requests.get(f"{api}/__stats", timeout=5).json() == {"served": 1, "throttled": 1}
    # and a page size other than the workload's is refused
    assert requests.get(f"{api}/page_number/s", params={"per_page": 7}, timeout=5).status_code == 400


def test_the_naive_loop_lands_every_page_once_through_the_429s(api: str, tmp_path: Path) -> None:
    # given the API with one page in two answering 429 once
    requests.post(f"{api}/__arm", params={"throttle_every": 2}, timeout=5).raise_for_status()
    # when the naive loop runs (as the harness runs it: a process of its own)
    argv = ["--base-url", api, "--datasets", "s,t", "--records", "5", "--threads", "4", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, naive.__file__, *argv], capture_output=True, text=True, check=True, timeout=60
    )
    # then it saw the 4 429s, waited them out, and every record is in its files once
    report = json.loads(done.stdout)
    assert (report["pages"], report["throttled"]) == (6, 4)
    assert tally(folder_blobs(tmp_path), expected_ids(["s", "t"], 15)).exactly_once


def _contender(key: str, baseline: str = "naive") -> Contender:
    return Contender(key, key, lambda _: [], lambda *_: None, baseline=baseline)


def test_ratios_are_against_dlt_and_the_naive_loop_to_the_same_kind_of_destination() -> None:
    # given medians of 10, 20, 40 and 16 s for 2,000 pages, and a failed run
    workload = Workload(("s",), 2000, 100, 8)
    seconds = {"dlt": 40.0, "naive": 10.0, "ingest": 16.0, "naive-s3": 20.0, "ingest-s3": 20.0}
    every = [*(_contender(k) for k in ("dlt", "naive", "ingest")), _contender("naive-s3", "naive-s3")]
    every.append(_contender("ingest-s3", "naive-s3"))
    trials = [Trial(k, "clean", s, s, 0, 0, None, None) for k, s in seconds.items()]
    trials.append(Trial("ingest-s3", "429", 5.0, None, 0, 20, None, "exit 1: boom"))
    # when the rows are made
    rows = {(r.contender, r.mode): r for r in rows_of(every, trials, {}, workload)}
    # then pages/s are 2,000 over the median, ratios per mode, and the failure is a FAILED row
    assert rows[("ingest", "clean")].pages_per_second == 125.0
    assert (rows[("ingest", "clean")].vs_dlt, rows[("ingest", "clean")].vs_naive) == (2.5, 0.625)
    assert rows[("ingest-s3", "clean")].vs_naive == 1.0
    assert rows[("ingest-s3", "429")].failed
    checks = {c["figure"]: c["met"] for c in acceptance(list(rows.values()))}
    assert checks == {
        "ingest / dlt (clean)": True,
        "ingest / naive (clean)": False,
        "ingest / dlt (429)": None,
        "ingest-s3 / naive-s3 (clean)": True,
    }
