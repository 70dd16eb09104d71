"""Benchmark 4: cold start (import time of each handler against a bare `import boto3`, fresh
isolated interpreters seeing what Lambda shows a function, interleaved, median of 10; for the worker also
its import plus loading its sources file, what its first invoke does first) and the size of the built
layer and function zips (bytecode included, as shipped)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from apilake_dev.local.hostlayer import build_host_layer, runtime_packages, sam_build
from bench.common import ROOT, Row, median, python_time

RUNS = 10
LAYER_TARGET_MB = 10.0
IMPORT_TARGET_RATIO = 1.8
LOAD_SOURCES = "from apilake.aws import cached_sources; cached_sources"
# The packages the worker imports, fixed by the design (boto3, requests, tenacity, Powertools) or the conventions
# (pydantic at the boundaries): their import alone, without apilake's modules. pydantic as a model needs it: its
# models and field types (``import pydantic`` alone loads next to nothing). No PyYAML: the worker reads the sources
# file's validated copy (apilake.config.load_sources).
PACKAGES = (
    "import boto3, requests, tenacity; from pydantic import BaseModel, Field, StringConstraints; "
    "from aws_lambda_powertools import Logger, Metrics; "
    "from aws_lambda_powertools.utilities.parameters import SecretsProvider"
)


def import_code(paths: list[str], statement: str) -> str:
    return (
        f"import sys, time; sys.path[:0] = {paths!r}; t = time.perf_counter(); {statement}; "
        "print(time.perf_counter() - t)"
    )


def import_times(layer: Path, runtime: Path, runs: int = RUNS) -> dict[str, float]:
    """Median import seconds in isolated interpreters (``-I -S``: no site-packages) that see what
    Lambda shows a function: the runtime's boto3 (here: links to this environment's, bytecode
    compiled by `make env`), the layer (built with its bytecode) and the function's folder."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    worker = [str(ROOT / "functions" / "worker"), str(layer), str(runtime)]
    codes = {
        "boto3": import_code([str(runtime)], "import boto3"),
        # What the design's packages alone cost the worker (no apilake code): the floor under any worker.
        "packages": import_code([str(layer), str(runtime)], PACKAGES),
        "worker": import_code(worker, "import app"),
        # And what its first invoke does with the sources file before anything else (read from the layer, where
        # Lambda has it at /opt/python): what a cold start pays for them, wherever it pays it.
        "worker+sources": import_code(worker, f"import app; {LOAD_SOURCES}({str(layer / 'sources.yaml')!r})"),
        "planner": import_code([str(ROOT / "functions" / "planner"), str(layer), str(runtime)], "import app"),
    }
    samples: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(runs):  # interleaved, so that a noisy moment hits all of them alike
        for name, code in codes.items():
            samples[name].append(python_time(code, env, isolated=True))
    return {name: median(values) for name, values in samples.items()}


def zipped_size(folder: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return buffer.tell()


def run(build_dir: Path) -> list[Row]:
    times = import_times(build_host_layer(build_dir / "host"), runtime_packages(build_dir / "runtime"))
    rows: list[Row] = []
    floor = times["packages"] / times["boto3"]
    rows.append(
        Row(
            "4 cold start",
            "the worker's packages alone / boto3 import",
            floor,
            "x",
            "(reported)",
            None,
            f"{times['packages'] * 1000:.0f} ms: {PACKAGES.removeprefix('import ')}",
        )
    )
    figures = {
        "worker": "worker import / boto3 import",
        "worker+sources": "worker import + loading its sources / boto3 import",
        "planner": "planner import / boto3 import",
    }
    for name, figure in figures.items():
        ratio = times[name] / times["boto3"]
        target = IMPORT_TARGET_RATIO if name == "worker" else None
        rows.append(
            Row(
                "4 cold start",
                figure,
                ratio,
                "x",
                f"<= {IMPORT_TARGET_RATIO}x" if target else "(reported)",
                ratio <= target if target else None,
                f"{times[name] * 1000:.0f} ms vs {times['boto3'] * 1000:.0f} ms, median of {RUNS}",
            )
        )
    if not (build_dir / "CommonLayer").exists():
        sam_build(ROOT / "template.yaml", build_dir)
    layer_mb = zipped_size(build_dir / "CommonLayer") / 1e6
    rows.append(
        Row("4 cold start", "layer zip", layer_mb, "MB", f"<= {LAYER_TARGET_MB} MB", layer_mb <= LAYER_TARGET_MB)
    )
    for function in ("ApiAWorker", "Planner"):
        rows.append(
            Row("4 cold start", f"{function} zip", zipped_size(build_dir / function) / 1e3, "kB", "(reported)", None)
        )
    return rows
