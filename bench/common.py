"""Helpers shared by the benchmark scripts: medians of interleaved runs, a result row, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from apilake_cli.output import format_table
from apilake_dev.vendors.fake import FakeVendor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# The benchmarks' own sources (their shapes and sizes are the benchmarks', not the examples').
BENCH_SOURCES = ("bench-a", "bench-b", "bench-c", "bench-d")


def page_number_sources(
    vendor: FakeVendor, target: Path, names: Sequence[str], *, rps: float, page_size: int, concurrency: int
) -> Path:
    """A sources file of page_number fan-out sources served by ``vendor``, one per name (its dataset)."""
    sources = [
        {
            "name": name,
            "base_url": vendor.base_url,
            "path": f"/page_number/{name}",
            "records_path": "data",
            "record_id_path": "id",
            "pagination": {
                "type": "page_number",
                "page_param": "page",
                "size_param": "per_page",
                "page_size": page_size,
                "total_path": "meta.total",
            },
            "budget": {"requests_per_second": rps, "max_concurrency": concurrency},
        }
        for name in names
    ]
    target.write_text(json.dumps({"version": 1, "sources": sources}))
    return target


def quiet(_: str) -> None:
    """A printer for the local flow that prints nothing (the benchmarks print their own lines)."""


@dataclass
class Row:
    benchmark: str
    figure: str
    value: float
    unit: str
    target: str
    met: bool | None
    detail: str = ""


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def python_time(code: str, env: dict[str, str] | None = None, isolated: bool = False) -> float:
    """Seconds a fresh interpreter spends in ``code`` (which must print its own elapsed seconds);
    ``isolated``: ``-I -S``, no environment variables, no site-packages."""
    flags = ["-I", "-S"] if isolated else []
    out = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def write(rows: list[Row], name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2))
    return path


def table(rows: list[Row]) -> str:
    headers = ["benchmark", "figure", "value", "target", "met"]
    cells = [
        (
            r.benchmark,
            r.figure,
            f"{r.value:,.0f} {r.unit}".strip() if abs(r.value) >= 100 else f"{r.value:.3g} {r.unit}".strip(),
            r.target,
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
        for r in rows
    ]
    return format_table(headers, cells, max_width=80)
