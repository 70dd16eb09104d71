"""The peer benchmark's contenders, each behind one small adapter: a command line, the environment
it needs (a local folder or a bucket on moto's server), whether it can run here, and how to count
what it landed. A new contender is one more :class:`Contender` in :func:`contenders`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers.count import Landed, bucket_blobs, dlt_tables, expected_ids, folder_blobs, tally

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".bench-peers" / "bin" / "python"
HERE = Path(__file__).resolve().parent
FAST_BUDGET = 10_000.0  # requests/s: apilake's pacing out of the way, as in make bench
# apilake ingest (helper H's command), as argument templates; --apilake-folder-args/--apilake-s3-args override.
APILAKE_FOLDER_ARGS = "--home {home} ingest --sources {sources} --lake {out} --ingestion-date 2026-11-26 --json"
APILAKE_S3_ARGS = (
    "--home {home} ingest --sources {sources} --bucket {bucket} --endpoint-url {endpoint} "
    "--ingestion-date 2026-11-26 --json"
)


@dataclass(frozen=True)
class Workload:
    datasets: tuple[str, ...]
    pages: int  # per dataset
    records: int  # per page
    threads: int  # concurrency, for every contender

    @property
    def total_pages(self) -> int:
        return self.pages * len(self.datasets)

    @property
    def total_records(self) -> int:
        return self.total_pages * self.records

    def expected(self) -> set[str]:
        return expected_ids(self.datasets, self.pages * self.records)


@dataclass
class Context:
    """One run's surroundings, made fresh by the harness for each run."""

    workload: Workload
    base_url: str  # the fake API
    work: Path  # an empty folder of this run's own
    sources: Path  # apilake's sources file for this workload and API
    endpoint: str = ""  # moto's server, for contenders with ``s3``
    bucket: str = ""
    s3: Any = None  # a client of that server, for counting
    env: dict[str, str] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.work / "out"


@dataclass(frozen=True)
class Contender:
    key: str
    title: str
    command: Callable[[Context], list[str]]
    count: Callable[[Context, dict[str, Any]], Landed | None]  # None: nothing landed to count (the API ceiling)
    s3: bool = False  # runs against a fresh bucket on moto's server
    nice: bool = True  # its process at nice 10 (the local flow nices its own containers)
    available: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    baseline: str = "naive"  # the naive loop it is compared with (same kind of destination)


def sources_file(base_url: str, workload: Workload, target: Path) -> Path:
    """apilake's sources: one page_number fan-out source per dataset, concurrency shared out equally."""
    per_source = max(1, workload.threads // len(workload.datasets))
    sources = [
        {
            "name": name,
            "base_url": base_url,
            "path": f"/page_number/{name}",
            "records_path": "data",
            "record_id_path": "id",
            "pagination": {
                "type": "page_number",
                "page_param": "page",
                "size_param": "per_page",
                "page_size": workload.records,
                "total_path": "meta.total",
            },
            "budget": {"requests_per_second": FAST_BUDGET, "max_concurrency": per_source},
        }
        for name in workload.datasets
    ]
    target.write_text(json.dumps({"version": 1, "sources": sources}))
    return target


def _naive(ctx: Context, *extra: str) -> list[str]:
    w = ctx.workload
    return [
        sys.executable,
        str(HERE / "naive.py"),
        "--base-url",
        ctx.base_url,
        "--datasets",
        ",".join(w.datasets),
        "--records",
        str(w.records),
        "--threads",
        str(w.threads),
        *extra,
    ]


def _dlt(ctx: Context) -> list[str]:
    w = ctx.workload
    return [
        str(PEERS_PYTHON),
        str(HERE / "dlt_run.py"),
        "--base-url",
        ctx.base_url,
        "--datasets",
        ",".join(w.datasets),
        "--pages",
        str(w.pages),
        "--records",
        str(w.records),
        "--threads",
        str(w.threads),
        "--out",
        str(ctx.out),
        "--work",
        str(ctx.work / "pipeline"),
    ]


def _dlt_available() -> str | None:
    return None if PEERS_PYTHON.exists() else f"{PEERS_PYTHON} missing (make bench-peers makes it)"


def _count_dlt(ctx: Context, report: dict[str, Any]) -> Landed:
    return tally(folder_blobs(ctx.out, dlt_tables(report["resources"])), ctx.workload.expected())


def _count_folder(ctx: Context, _: dict[str, Any]) -> Landed:
    return tally(folder_blobs(ctx.out), ctx.workload.expected())


def _count_raw_folder(ctx: Context, _: dict[str, Any]) -> Landed:
    return tally(folder_blobs(ctx.out, lambda p: p.parts[0] == "raw"), ctx.workload.expected())


def _count_bucket(prefix: str) -> Callable[[Context, dict[str, Any]], Landed]:
    return lambda ctx, _: tally(bucket_blobs(ctx.s3, ctx.bucket, prefix), ctx.workload.expected())


def _apilake(template: str) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        values = {
            "home": ctx.work / "home",
            "sources": ctx.sources,
            "out": ctx.out,
            "bucket": ctx.bucket,
            "endpoint": ctx.endpoint,
        }
        return [sys.executable, "-m", "apilake_cli.main", *(part.format(**values) for part in template.split())]

    return command


def _apilake_available() -> str | None:
    """Available when this checkout's CLI has an ``ingest`` command."""
    done = subprocess.run(
        [sys.executable, "-m", "apilake_cli.main", "ingest", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        check=False,
    )
    return None if done.returncode == 0 else "not available: no `apilake ingest` in this checkout"


def _local_flow(ctx: Context) -> list[str]:
    w = ctx.workload
    return [
        sys.executable,
        "-m",
        "bench.peers.local_flow",
        "--sources",
        str(ctx.sources),
        "--datasets",
        ",".join(w.datasets),
        "--records-per-dataset",
        str(w.pages * w.records),
    ]


def _landed_in_report(_: Context, report: dict[str, Any]) -> Landed:
    return Landed(**report["landed"])


def contenders(folder_args: str = APILAKE_FOLDER_ARGS, s3_args: str = APILAKE_S3_ARGS) -> list[Contender]:
    return [
        Contender("dlt", "dlt rest_api_source -> filesystem (jsonl gz)", _dlt, _count_dlt, available=_dlt_available),
        Contender("naive", "naive loop -> local files", lambda ctx: _naive(ctx, "--out", str(ctx.out)), _count_folder),
        Contender(
            "naive-s3",
            "naive loop -> S3 (moto)",
            lambda ctx: _naive(ctx, "--s3-endpoint", ctx.endpoint, "--bucket", ctx.bucket),
            _count_bucket(""),
            s3=True,
            baseline="naive-s3",
        ),
        Contender(
            "ingest",
            "apilake ingest -> local folder",
            _apilake(folder_args),
            _count_raw_folder,
            available=_apilake_available,
        ),
        Contender(
            "ingest-s3",
            "apilake ingest -> S3 (moto)",
            _apilake(s3_args),
            _count_bucket("raw/"),
            s3=True,
            available=_apilake_available,
            baseline="naive-s3",
        ),
        Contender(
            "local-flow",
            "apilake run --local (SQS + S3 on moto)",
            _local_flow,
            _landed_in_report,
            nice=False,
            baseline="naive-s3",
        ),
        Contender("ceiling", "API ceiling: GET only, 8 threads", lambda ctx: _naive(ctx, "--discard"), lambda *_: None),
    ]
