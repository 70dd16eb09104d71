"""`make bench-peers`: apilake against its peers on one fake API and one workload, in one interleaved
run. Contenders (bench/peers/contenders.py): dlt's REST API source to its filesystem destination (in
its own environment, .bench-peers), a naive threaded loop to local files and to S3 on moto, `apilake
ingest` to a local folder and to S3 on moto, the local SQS flow, and the API's ceiling (GET only).

Fairness: the same API (bench/peers/vendor.py, its own process, bodies encoded once), the same pages,
the same concurrency for all; every contender a process of its own at nice 10 (the API and moto at
0); each trial runs every contender clean and with 1 % of pages answered 429 + ``Retry-After: 1``
once (the same pages every time), in an order rotated per trial; a fresh folder or bucket per run;
the median of the trials. Time is the contender's process, start to exit (the local flow's emulator
start and read-back taken out: the others find theirs running and are counted after they exit).
Every run is checked: each record the API served landed exactly once, or the row says FAILED.

    python -m bench.peers.run [--pages 2000] [--records 100] [--threads 8] [--trials 3] [--only a,b]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from apilake_dev.local.aws import LocalAws
from bench.common import RESULTS, machine
from bench.peers.contenders import (
    APILAKE_FOLDER_ARGS,
    APILAKE_S3_ARGS,
    ROOT,
    Contender,
    Context,
    Workload,
    contenders,
    sources_file,
)
from bench.peers.report import Trial, acceptance, markdown, rows_of, text_table

DATASETS = ("bench-a", "bench-b", "bench-c", "bench-d")
NICENESS = 10
BUCKET = "peers-bench"


class Api:
    """The fake API in a process of its own (its own interpreter lock), for the whole run."""

    def __init__(self, workload: Workload) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.peers.vendor",
                "--datasets",
                ",".join(workload.datasets),
                "--pages",
                str(workload.pages),
                "--records",
                str(workload.records),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            raise RuntimeError(f"the fake API did not start (said {self.base_url!r})")

    def arm(self, throttle_every: int) -> int:
        answer = requests.post(f"{self.base_url}/__arm", params={"throttle_every": throttle_every}, timeout=10)
        answer.raise_for_status()
        return int(answer.json()["armed"])

    def stats(self) -> dict[str, int]:
        answer = requests.get(f"{self.base_url}/__stats", timeout=10)
        answer.raise_for_status()
        return {k: int(v) for k, v in answer.json().items()}

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _report(stdout: str) -> dict[str, Any]:
    """The contender's JSON: the whole of stdout, else its last line; {} when there is none."""
    for text in (stdout, stdout.strip().splitlines()[-1] if stdout.strip() else ""):
        with contextlib.suppress(ValueError):
            found = json.loads(text)
            if isinstance(found, dict):
                return found
    return {}


@contextlib.contextmanager
def _bucket(ctx: Context) -> Iterator[None]:
    with LocalAws() as aws:
        ctx.s3 = aws.client("s3")
        ctx.s3.create_bucket(Bucket=BUCKET)
        ctx.endpoint, ctx.bucket, ctx.env = aws.endpoint, BUCKET, aws.env()
        yield


def run_one(
    contender: Contender, mode: str, throttle_every: int, api: Api, workload: Workload, sources: Path, timeout: float
) -> Trial:
    armed = api.arm(throttle_every)
    with tempfile.TemporaryDirectory(prefix=f"peers-{contender.key}-") as folder:
        ctx = Context(workload, api.base_url, Path(folder), sources)
        with _bucket(ctx) if contender.s3 else contextlib.nullcontext():
            argv = ["nice", "-n", str(NICENESS), *contender.command(ctx)] if contender.nice else contender.command(ctx)
            start = time.monotonic()
            try:
                done = subprocess.run(
                    argv,
                    cwd=ROOT,
                    env={**os.environ, **ctx.env},
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return Trial(
                    contender.key, mode, time.monotonic() - start, None, 0, armed, None, f"timed out ({timeout:g} s)"
                )
            wall = time.monotonic() - start
            seen = api.stats().get("throttled", 0)
            if done.returncode != 0:
                tail = (done.stderr.strip() or done.stdout.strip())[-600:]
                return Trial(contender.key, mode, wall, None, seen, armed, None, f"exit {done.returncode}: {tail}")
            report = _report(done.stdout)
            counted = wall - float(report.get("setup_seconds", 0.0)) - float(report.get("verify_seconds", 0.0))
            landed = contender.count(ctx, report)
    if landed is not None and not landed.exactly_once:
        return Trial(contender.key, mode, wall, counted, seen, armed, asdict(landed), landed.describe())
    return Trial(contender.key, mode, wall, counted, seen, armed, asdict(landed) if landed else None, None)


def interleaved(
    chosen: Sequence[Contender], workload: Workload, trials: int, throttle_every: int, timeout: float
) -> list[Trial]:
    """Every contender, clean and throttled, in each trial; the contenders' order rotated per trial."""
    found: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="peers-") as folder:
        api = Api(workload)
        try:
            sources = sources_file(api.base_url, workload, Path(folder) / "sources.json")
            for trial in range(trials):
                order = [*chosen[trial % len(chosen) :], *chosen[: trial % len(chosen)]]
                for contender in order:
                    modes = [("clean", 0), ("429", throttle_every)]
                    for mode, every in modes if trial % 2 == 0 else modes[::-1]:
                        result = run_one(contender, mode, every, api, workload, sources, timeout)
                        found.append(result)
                        print(f"  trial {trial + 1}: {describe(result, workload)}", flush=True)
        finally:
            api.close()
    return found


def describe(trial: Trial, workload: Workload) -> str:
    head = f"{trial.contender:<10} {trial.mode:<5}"
    if trial.error:
        return f"{head} FAILED after {trial.process_wall:.1f} s: {trial.error}"
    assert trial.seconds is not None
    return (
        f"{head} {workload.total_pages / trial.seconds:7.1f} pages/s ({trial.seconds:.1f} s, "
        f"{trial.throttled} 429s answered)"
    )


def write(payload: dict[str, Any], markdown_text: str) -> tuple[Path, Path]:
    """bench/results/peers-<time>.json and .md (as bench.common.write names its files)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"peers-{time.strftime('%Y%m%dT%H%M%S')}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(payload, indent=2))
    md_path.write_text(markdown_text)
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apilake against dlt and a naive loop on one fake API")
    parser.add_argument("--pages", type=int, default=2000, help="pages in all, over 4 datasets (default %(default)s)")
    parser.add_argument("--records", type=int, default=100, help="records per page (default %(default)s)")
    parser.add_argument("--threads", type=int, default=8, help="concurrency of every contender (default %(default)s)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials, median (default %(default)s)")
    parser.add_argument("--throttle-every", type=int, default=100, help="1 in N pages answers 429 once (default 1 %%)")
    parser.add_argument(
        "--only", help="these contenders, a,b (default: all): " + ", ".join(c.key for c in contenders())
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds a run may take (default %(default)s)")
    parser.add_argument("--apilake-folder-args", default=APILAKE_FOLDER_ARGS, help="apilake ingest to a folder")
    parser.add_argument("--apilake-s3-args", default=APILAKE_S3_ARGS, help="apilake ingest to S3")
    args = parser.parse_args(argv)
    workload = Workload(DATASETS, max(1, args.pages // len(DATASETS)), args.records, args.threads)
    every = contenders(args.apilake_folder_args, args.apilake_s3_args)
    wanted = set(args.only.split(",")) if args.only else {c.key for c in every}
    unknown = wanted - {c.key for c in every}
    if unknown:
        parser.error(f"unknown contender(s) {sorted(unknown)}; known: {', '.join(c.key for c in every)}")
    chosen, absent = [], {}
    for contender in every:
        if contender.key in wanted:
            reason = contender.available()
            if reason:
                absent[contender.key] = reason
                print(f"{contender.key}: {reason}", flush=True)
            else:
                chosen.append(contender)
    print(
        f"{workload.total_pages:,} pages x {workload.records} records over {len(workload.datasets)} datasets, "
        f"{workload.threads}-way, {args.trials} trials, 1 in {args.throttle_every} pages 429 once in the 429 runs",
        flush=True,
    )
    started = time.monotonic()
    trials = interleaved(chosen, workload, args.trials, args.throttle_every, args.timeout)
    rows = rows_of(every, trials, absent, workload)
    checks = acceptance(rows)
    command = "python -m bench.peers.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    print()
    print(text_table(rows, checks))
    payload = {
        "machine": machine(),
        "command": command.strip(),
        "workload": asdict(workload),
        "seconds": time.monotonic() - started,
        "rows": [asdict(r) for r in rows],
        "acceptance": checks,
        "trials": [asdict(t) for t in trials],
    }
    paths = write(payload, markdown(rows, checks, command.strip(), workload, machine()))
    print(f"\n{time.monotonic() - started:.0f} s; written: {paths[0]} and {paths[1]}")
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
