"""What the commands print: one table printer for every table (SQL results, run summaries, benchmarks),
a run's status as people read it, and the JSON documents of ``--json`` (one per command, stable keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apilake.drift import SourceDrift
from apilake.ledger import RunStatus, SourceStatus
from apilake.marks import MarkReport

if TYPE_CHECKING:
    from apilake_dev.local.run import LocalRunResult


def format_table(columns: list[str], rows: list[tuple[Any, ...]], max_width: int = 40) -> str:
    """Columns padded to their widest cell (cut at ``max_width``), ``NULL`` for None, then the row count."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def print_summary(result: LocalRunResult, expected: dict[str, int] | None = None) -> None:
    """A local run per source: pages, records (and what the vendor holds, if known), retries, DLQ."""
    headers = ["source", "pages", "records", *(["vendor total"] if expected else []), "bytes", "retries", "429s", "DLQ"]
    rows: list[tuple[Any, ...]] = []
    for name, s in result.sources.items():
        vendor = [expected.get(name, "")] if expected else []
        rows.append((name, s.pages, s.records, *vendor, s.bytes, s.retries, s.throttled, s.dlq))
    print(
        f"run {result.run_id}: {'drained' if result.drained else 'NOT drained (time limit)'} "
        f"in {result.wall_seconds:.1f}s"
    )
    if result.planner_error:
        print(f"planner error: {result.planner_error}")
    print(format_table(headers, rows))


def print_json(document: Any) -> None:
    """A command's one JSON document on stdout (``--json``)."""
    print(json.dumps(document, indent=2, default=str))


def source_pages(source: SourceStatus) -> tuple[int, int | None]:
    """Pages landed and expected of a source (expected None while a chain has not ended)."""
    landed = sum(shard.landed_pages for shard in source.shards)
    # A child's pages are known once its parent is complete (every child shard announced).
    expected = [shard.expected_pages for shard in source.shards] + ([None] if source.parent_note else [])
    return landed, None if any(e is None for e in expected) else sum(e or 0 for e in expected)


def status_document(
    status: RunStatus,
    dlq_depths: Mapping[str, int | None] | None = None,
    drift: Mapping[str, SourceDrift] | None = None,
) -> dict[str, Any]:
    """A run's status as ``--json`` gives it; ``dlq_messages`` (of every run, apilake.report's
    DLQ_DEPTH_ATTRIBUTES) is None where the DLQs were not read, or the source's DLQ no longer exists;
    ``schema_drift`` (apilake.drift.run_drift) is None for a source without columns, or when not read."""
    sources = []
    for source in status.sources:
        landed, expected = source_pages(source)
        shards = [
            {
                "shard": shard.shard,
                "mode": shard.mode,
                "complete": shard.complete,
                "pages_landed": shard.landed_pages,
                "pages_expected": shard.expected_pages,
                "chain_ended": shard.ended if shard.mode == "chain" else None,
                "records_landed": shard.landed_records,
                "records_expected": shard.expected_records,
                "missing": [{"page": page, "reason": shard.why_missing(page)} for page in shard.missing_pages],
                "note": shard.note,
                "unreconciled": shard.unreconciled,
            }
            for shard in source.shards
        ]
        sources.append(
            {
                "source": source.source,
                "complete": source.complete,
                "pages_landed": landed,
                "pages_expected": expected,
                "dlq_messages": None if dlq_depths is None else dlq_depths.get(source.source),
                "schema_drift": _drift_document(drift.get(source.source) if drift else None),
                "parent": source.parent,  # a child source: its shards are those its parent's pages announced
                "parent_note": source.parent_note,
                "shards": shards,
            }
        )
    return {
        "run_id": status.run_id,
        "ingestion_date": status.ingestion_date.isoformat(),
        "complete": status.complete,
        "sources": sources,
    }


def _drift_document(drift: SourceDrift | None) -> dict[str, Any] | None:
    if drift is None:
        return None
    return {
        "judged": drift.judged,
        "fields": drift.fields,
        **drift.model_dump(mode="json", include={"new", "missing", "changed", "pages_observed", "pages_unobserved"}),
    }


def print_status(
    status: RunStatus | None,
    home: Path | None,
    marks: dict[str, MarkReport] | None = None,
    dlq_depths: Mapping[str, int | None] | None = None,
    drift: Mapping[str, SourceDrift] | None = None,
) -> None:
    """Complete or not, per source and shard, with every missing page and why; ``home``: the local
    state folder, whose DLQ dumps are shown too (None for a deployed lake); ``marks``: the incremental
    sources' windows and marks; ``dlq_depths``: the messages in each source's DLQ, of every run (a deployed
    stack's; None for a source whose DLQ no longer exists); ``drift``: the schema drift of the sources with
    columns (apilake.drift.run_drift, from a status read with the pages' details)."""
    if status is None:
        print("status: no run manifest (the planner did not run)")
        return
    print(
        f"run {status.run_id} (ingestion date {status.ingestion_date}): complete: {'yes' if status.complete else 'NO'}"
    )
    for source in status.sources:
        dlq = ""
        if dlq_depths is not None and source.source in dlq_depths:
            depth = dlq_depths[source.source]
            if depth is None:
                dlq = ", DLQ: gone (the stack has no DLQ of this source now)"
            else:
                dlq = f", DLQ (all runs): {depth} message(s)"
        print(f"  {source.source}: {'complete' if source.complete else 'INCOMPLETE'}{dlq}")
        shown = source.shards
        if source.parent is not None:  # a child: one shard per parent record, only those not complete shown
            shown = [shard for shard in source.shards if not shard.complete]
            done = len(source.shards) - len(shown)
            print(f"    child of {source.parent}: {len(source.shards)} shard(s) announced, {done} complete")
            if source.parent_note:
                print(f"      {source.parent_note}")
        for shard in shown:
            expected = "?" if shard.expected_pages is None else shard.expected_pages
            line = f"    shard {shard.shard} ({shard.mode}): {shard.landed_pages}/{expected} pages"
            if shard.mode == "chain":
                line += ", chain ended" if shard.ended else ", chain NOT ended"
            if shard.landed_records is not None:
                stated = "?" if shard.expected_records is None else shard.expected_records
                line += f", {shard.landed_records}/{stated} records"
            print(line)
            if shard.note:
                print(f"      {shard.note}")
            if shard.capped:
                print(f"      the vendor caps the page size: planned with pages of {shard.page_size}")
            if shard.unreconciled:
                print(f"      records do not reconcile: {shard.unreconciled}")
            for page in shard.missing_pages:
                print(f"      missing page {page}: {shard.why_missing(page)}")
        if marks and source.source in marks:
            for line in describe_mark(marks[source.source], source.complete, status.run_id):
                print(f"    {line}")
        if drift and source.source in drift:
            for line in describe_drift(source.source, drift[source.source]):
                print(f"    {line}")
        dumped = home / "dlq" / f"{source.source}.jsonl" if home else None
        if dumped and dumped.exists():
            for line in dumped.read_text().splitlines():
                message = json.loads(line)
                print(f"      in DLQ: {message['body']}")


def describe_drift(source: str, drift: SourceDrift) -> list[str]:
    """A source with columns in a run: its fields as declared, or each that drifted."""
    if not drift.judged:
        return [f"schema: not observed ({drift.pages_unobserved} page(s) landed before the worker noted fields)"]
    if not drift.fields:
        return [f"schema: as declared ({len(drift.observed)} field(s) seen in {drift.records_observed} record(s))"]
    lines = [f"schema DRIFT: {drift.fields} field(s) not as columns declare (apilake schema infer --source {source})"]
    return lines + [f"  {line}" for line in drift.lines()]


def describe_mark(report: MarkReport, complete: bool, run_id: str) -> list[str]:
    """An incremental source in a run: what it asked for, what it landed, where its mark is."""
    window = f"{report.param} after {report.since}" + (f" up to {report.until}" if report.until is not None else "")
    landed = "nothing" if report.landed_highest is None else f"up to {report.landed_highest}"
    lines = [f"incremental: asked for {window}{' (explicit window)' if report.explicit else ''}; landed {landed}"]
    mark = report.mark
    if mark is None:
        lines.append("mark: none yet (the next run asks from the initial value)")
    else:
        before = "none" if mark.previous is None else mark.previous
        lines.append(
            f"mark: {mark.value} (moved {mark.moved_at.isoformat(timespec='seconds')} by run {mark.run_id}; "
            f"before: {before})"
        )
    if report.explicit:
        lines.append("an explicit window never moves the mark")
    elif not complete:
        lines.append("this run is not complete: the mark stays, the next run asks for the same window again")
    elif report.landed_highest is not None and (mark is None or mark.run_id != run_id):
        lines.append(f"this run is complete: the next run's planning moves the mark to {report.landed_highest}")
    return lines
