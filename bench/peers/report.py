"""The peer benchmark's figures: one row per contender and mode (medians of its trials), the
acceptance ratios of issue 16, as a text table and as markdown."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apilake_cli.output import format_table
from bench.peers.contenders import Contender, Workload

MODES = ("clean", "429")
# issue 16's acceptance: (contender, against, mode, at least)
TARGETS = (
    ("ingest", "dlt", "clean", 2.0),
    ("ingest", "naive", "clean", 0.8),
    ("ingest", "dlt", "429", 4.0),
    ("ingest-s3", "naive-s3", "clean", 0.8),
)


@dataclass
class Trial:
    contender: str
    mode: str
    process_wall: float  # the contender's process, start to exit
    seconds: float | None  # counted: process_wall less the setup and read-back it declares; None if it failed
    throttled: int  # 429s the API answered during the run
    armed: int  # pages set to answer 429 once
    landed: dict[str, Any] | None
    error: str | None


@dataclass
class Row:
    contender: str
    title: str
    mode: str
    status: str  # "ok", "FAILED: ...", "not available: ..."
    trials: int = 0  # trials that passed
    seconds: float | None = None  # median
    pages_per_second: float | None = None
    records_per_second: float | None = None
    vs_dlt: float | None = None
    vs_naive: float | None = None
    baseline: str = ""
    throttled: int | None = None  # 429s answered per run (median)

    @property
    def failed(self) -> bool:
        return self.status.startswith("FAILED")


def rows_of(
    every: Sequence[Contender], trials: Sequence[Trial], absent: dict[str, str], workload: Workload
) -> list[Row]:
    rows: list[Row] = []
    for contender in every:
        for mode in MODES:
            row = Row(contender.key, contender.title, mode, "ok", baseline=contender.baseline)
            mine = [t for t in trials if t.contender == contender.key and t.mode == mode]
            if contender.key in absent:
                row.status = absent[contender.key]
            elif not mine:
                continue
            elif failures := [t for t in mine if t.error]:
                row.status = f"FAILED ({len(failures)} of {len(mine)}): {failures[0].error}"
            else:
                row.trials = len(mine)
                row.seconds = float(statistics.median(t.seconds or 0.0 for t in mine))
                row.pages_per_second = workload.total_pages / row.seconds
                row.records_per_second = workload.total_records / row.seconds
                row.throttled = int(statistics.median(t.throttled for t in mine))
            rows.append(row)
    for row in rows:
        row.vs_dlt = _ratio(rows, row, "dlt")
        row.vs_naive = _ratio(rows, row, row.baseline)
    return rows


def _ratio(rows: Sequence[Row], row: Row, against: str) -> float | None:
    other = next((r for r in rows if r.contender == against and r.mode == row.mode), None)
    if row.pages_per_second is None or other is None or not other.pages_per_second:
        return None
    return row.pages_per_second / other.pages_per_second


def acceptance(rows: Sequence[Row]) -> list[dict[str, Any]]:
    found = []
    for contender, against, mode, least in TARGETS:
        mine = next((r for r in rows if r.contender == contender and r.mode == mode), None)
        theirs = next((r for r in rows if r.contender == against and r.mode == mode), None)
        value = None
        if mine and theirs and mine.pages_per_second and theirs.pages_per_second:
            value = mine.pages_per_second / theirs.pages_per_second
        found.append(
            {
                "figure": f"{contender} / {against} ({mode})",
                "value": value,
                "target": f">= {least:g} x",
                "met": None if value is None else value >= least,
            }
        )
    return found


def _num(value: float | None, digits: str = ",.1f") -> str:
    return "" if value is None else format(value, digits)


def _cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.contender,
            r.mode,
            _num(r.pages_per_second),
            _num(r.records_per_second, ",.0f"),
            _num(r.seconds, ".1f"),
            _num(r.vs_dlt, ".2f"),
            _num(r.vs_naive, ".2f") + (f" ({r.baseline})" if r.vs_naive is not None else ""),
            "" if r.throttled is None else str(r.throttled),
            r.status if r.status == "ok" else r.status[:200],
        )
        for r in rows
    ]


HEADERS = ["contender", "mode", "pages/s", "records/s", "wall s", "x dlt", "x naive", "429s", "check"]


def _check_lines(checks: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"{c['figure']}: {'-' if c['value'] is None else format(c['value'], '.2f')} x, target {c['target']}: "
        + {True: "met", False: "NOT met", None: "not measured"}[c["met"]]
        for c in checks
    ]


def text_table(rows: Sequence[Row], checks: Sequence[dict[str, Any]]) -> str:
    return "\n".join([format_table(HEADERS, _cells(rows), max_width=60), "", *_check_lines(checks)])


def markdown(
    rows: Sequence[Row], checks: Sequence[dict[str, Any]], command: str, workload: Workload, where: dict[str, Any]
) -> str:
    lines = [
        "# Peer benchmark",
        "",
        f"`{command}` on {where['cpus']} CPUs ({where['machine']}, Python {where['python']}): "
        f"{workload.total_pages:,} pages x {workload.records} records over {len(workload.datasets)} datasets, "
        f"{workload.threads}-way; medians of interleaved trials. x naive: against the naive loop to the same "
        "kind of destination (named). 429s: answered by the API per run (median).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(cells) + " |" for cells in _cells(rows)),
        "",
        "Contenders: " + "; ".join(f"{r.contender}: {r.title}" for r in rows if r.mode == MODES[0]) + ".",
        "",
        *(f"- {line}" for line in _check_lines(checks)),
        "",
    ]
    return "\n".join(lines)
