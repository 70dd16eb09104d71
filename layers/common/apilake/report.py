"""The run report: what a run planned, what landed, what is missing and why, as ``report.json`` and a
self-contained ``report.html`` beside the run's manifest in the ledger.

Built from the manifest and the ledger only, read once (:meth:`Ledger.status` with the pages' details):
completeness and the missing pages (:attr:`ShardStatus.missing_pages`, the completeness metric's definition
too) with their reasons come from the status (never worked out again here), the figures from the landed
markers (what the worker recorded of each page: records, bytes, requests, 429s, latency, parks, when it was
fetched). The DLQ depths are the caller's (None: not known), each every message the source's dead-letter
queue holds (:data:`DLQ_DEPTH_ATTRIBUTES`, as ``apilake status`` counts). A stored report is rewritten only
when a figure changed (:func:`store_report`): S3 keeps a version of each PUT. With it goes the run's summary,
a line per source for SQL over every run (:mod:`apilake.run_summary`). The HTML is rendered with
Jinja2 (autoescaped: reasons quote vendors' answers) from ``templates/report.html.j2``; its timeline chart is
inline SVG whose coordinates are worked out here. Only this module imports Jinja2, and only to render: the
worker does not pay for it at a cold start, nor does a command that only reads a report.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from apilake.config import Source, SourcesFile
from apilake.drift import SourceDrift, source_drift
from apilake.ledger import LEDGER_PREFIX, LandedPage, Ledger, RunManifest, RunStatus, ShardStatus, SourceStatus
from apilake.run_summary import summary_body, summary_key

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
# The missing pages the HTML lists per source (the JSON has them all).
SHOWN_MISSING = 100
# The reasons the verdict banner quotes before pointing below.
SHOWN_REASONS = 5
# A dead-letter queue's depth, in the report as in `apilake status`: every message it holds, waiting (visible),
# being looked at (in flight: received by a peek, not deleted) or delayed.
DLQ_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def dlq_depth(attributes: Mapping[str, str]) -> int:
    """The depth of a queue whose ``GetQueueAttributes`` answered ``attributes`` (:data:`DLQ_DEPTH_ATTRIBUTES`)."""
    return sum(int(attributes.get(name, 0)) for name in DLQ_DEPTH_ATTRIBUTES)


def report_keys(run_id: str) -> tuple[str, str]:
    """The keys of a run's report in the lake bucket: (JSON, HTML), beside its manifest."""
    prefix = f"{LEDGER_PREFIX}/runs/run={run_id}/"
    return f"{prefix}report.json", f"{prefix}report.html"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Model):
    """Percentiles of the pages' successful responses, in milliseconds (None: no page recorded one)."""

    pages: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class MissingPage(_Model):
    """A page that has not landed (``page`` None: the shard as a whole), and why."""

    shard: str
    page: int | None
    reason: str


class ShardReport(_Model):
    shard: str
    mode: str
    complete: bool
    pages_expected: int | None
    pages_landed: int
    pages_missing: int
    records_expected: int | None
    records_landed: int
    reasons: list[str]  # the chain's note, the reconciliation's differences (the pages' are in ``missing``)


class TimelinePoint(_Model):
    """Pages of a source landed by ``at`` (each page counted at its ``fetched_at``)."""

    at: datetime
    pages: int


class SourceReport(_Model):
    source: str
    complete: bool
    pages_expected: int | None  # None: a chain that has not ended
    pages_landed: int
    pages_missing: int
    pages_unchanged: int  # landed again with the same content: not rewritten
    records: int
    bytes: int
    requests: int  # HTTP requests of the landed pages (pages landed before issue 13 count one)
    retries: int  # requests after the first, per page
    throttled: int  # 429 answers
    parked_pages: int  # landed pages that waited in their queue at least once
    parks: int
    dlq_depth: int | None
    latency_ms: Latency
    shards: list[ShardReport]
    missing: list[MissingPage]
    timeline: list[TimelinePoint]
    # The run's fields against the declared columns (apilake.drift); None: a source without columns (raw only).
    drift: SourceDrift | None = None
    # A child source whose parent is not complete: why its shards may not all be known (SourceStatus.parent_note).
    note: str | None = None


class RunReport(_Model):
    run_id: str
    trigger: Literal["schedule", "manual"]
    ingestion_date: str
    created_at: datetime
    generated_at: datetime
    complete: bool
    pages_expected: int | None
    pages_landed: int
    pages_missing: int
    records: int
    bytes: int
    sources: list[SourceReport]

    @property
    def incomplete_sources(self) -> list[SourceReport]:
        return [source for source in self.sources if not source.complete]

    @property
    def verdict(self) -> str:
        """One line: ``complete``, or how many pages are missing in how many sources."""
        if self.complete:
            return "complete"
        missing = [source for source in self.incomplete_sources if source.pages_missing]
        parts = []
        if missing:
            parts.append(f"{_plural(self.pages_missing, 'page')} missing in {_plural(len(missing), 'source')}")
        others = len(self.incomplete_sources) - len(missing)
        if others:
            parts.append(f"{_plural(others, 'source')} {'is' if others == 1 else 'are'} not complete")
        return "; ".join(parts)

    @property
    def reasons(self) -> list[str]:
        """Why, source by source: each missing page's or shard's reason, and each shard's other reasons."""
        found = []
        for source in self.incomplete_sources:
            found += [f"{source.source}: {source.note}"] if source.note else []
            found += [_missing_line(source.source, missing) for missing in source.missing]
            found += [
                f"{source.source}, shard {shard.shard}: {reason}" for shard in source.shards for reason in shard.reasons
            ]
        return found


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _missing_line(source: str, missing: MissingPage) -> str:
    where = f"{source}, shard {missing.shard}" + (f", page {missing.page}" if missing.page is not None else "")
    return f"{where}: {missing.reason}"


def build_report(
    ledger: Ledger,
    manifest: RunManifest,
    dlq_depths: Mapping[str, int] | None,
    now: datetime,
    sources_file: SourcesFile | None = None,
    status: RunStatus | None = None,
) -> RunReport:
    """The report of ``manifest``'s run as the ledger has it ``now`` (or as ``status``, read with its details, says:
    the ledger is not read twice); the schema drift of the sources with ``columns`` in ``sources_file`` (None: no
    drift section)."""
    if status is None:
        status = ledger.status(manifest, details=True)
    declared = sources_file.by_name if sources_file is not None else {}
    sources = [
        _source_report(source, (dlq_depths or {}).get(source.source), declared.get(source.source))
        for source in status.sources
    ]
    expected = [source.pages_expected for source in sources]
    return RunReport(
        run_id=manifest.run_id,
        trigger=manifest.trigger,
        ingestion_date=manifest.ingestion_date.isoformat(),
        created_at=manifest.created_at,
        generated_at=now,
        complete=status.complete,
        pages_expected=None if None in expected else sum(n or 0 for n in expected),
        pages_landed=sum(source.pages_landed for source in sources),
        pages_missing=sum(source.pages_missing for source in sources),
        records=sum(source.records for source in sources),
        bytes=sum(source.bytes for source in sources),
        sources=sources,
    )


def _source_report(status: SourceStatus, dlq_depth: int | None, declared: Source | None) -> SourceReport:
    source, shards = status.source, status.shards
    pages: list[LandedPage] = []
    shard_reports: list[ShardReport] = []
    missing: list[MissingPage] = []
    for shard in shards:
        landed = shard.pages or {}
        lost = [
            MissingPage(shard=shard.shard, page=page, reason=shard.why_missing(page)) for page in shard.missing_pages
        ]
        pages += landed.values()
        missing += lost
        shard_reports.append(_shard_report(shard, landed))
    # A child's pages are known once its parent is complete (every child shard announced).
    expected = [shard.pages_expected for shard in shard_reports] + ([None] if status.parent_note else [])
    requests = [page.attempts or 1 for page in pages]
    return SourceReport(
        source=source,
        complete=status.complete,
        note=status.parent_note,
        pages_expected=None if None in expected else sum(n or 0 for n in expected),
        pages_landed=len(pages),
        pages_missing=len(missing),
        pages_unchanged=sum(1 for page in pages if not page.written),
        records=sum(page.records for page in pages),
        bytes=sum(page.bytes for page in pages),
        requests=sum(requests),
        retries=sum(n - 1 for n in requests),
        throttled=sum(page.throttled or 0 for page in pages),
        parked_pages=sum(1 for page in pages if page.parks),
        parks=sum(page.parks or 0 for page in pages),
        dlq_depth=dlq_depth,
        latency_ms=latency([page.latency_ms for page in pages if page.latency_ms is not None]),
        shards=shard_reports,
        missing=missing,
        timeline=timeline([page.fetched_at for page in pages if page.fetched_at is not None]),
        drift=source_drift(declared, pages),
    )


def _shard_report(shard: ShardStatus, landed: Mapping[int, LandedPage]) -> ShardReport:
    # The note is said once: as its awaited page's reason, else (that page failed) as the shard's.
    note_told = shard.awaited_page is not None and shard.awaited_page not in shard.failures
    return ShardReport(
        shard=shard.shard,
        mode=shard.mode,
        complete=shard.complete,
        pages_expected=shard.expected_pages if shard.ended else None,
        pages_landed=shard.landed_pages,
        pages_missing=shard.pages_missing,
        records_expected=shard.expected_records,
        records_landed=sum(page.records for page in landed.values()),
        reasons=[reason for reason in (None if note_told else shard.note, shard.unreconciled) if reason],
    )


def latency(values: list[float]) -> Latency:
    """p50, p90 and p99 of ``values`` (statistics' inclusive method: no value beyond the ones seen)."""
    if not values:
        return Latency(pages=0)
    if len(values) == 1:
        only = round(values[0], 1)
        return Latency(pages=1, p50=only, p90=only, p99=only)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return Latency(pages=len(values), p50=round(cuts[49], 1), p90=round(cuts[89], 1), p99=round(cuts[98], 1))


def timeline(fetched: list[datetime]) -> list[TimelinePoint]:
    """The pages landed by each moment a page was fetched (one point per distinct moment)."""
    points: dict[datetime, int] = {}
    for landed, at in enumerate(sorted(fetched), start=1):
        points[at] = landed
    return [TimelinePoint(at=at, pages=pages) for at, pages in points.items()]


# -- the timeline chart: coordinates for the template's SVG ------------------------------------------------
# Okabe and Ito's palette (told apart with every common colour blindness), yellow left out (unreadable on white).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#000000")
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True)
class Tick:
    at: float  # x or y in the SVG
    label: str


@dataclass(frozen=True)
class Series:
    source: str
    color: str
    points: str  # an SVG polyline's points: a step line of the pages landed
    end_x: float
    end_y: float
    pages: int


@dataclass(frozen=True)
class TimelineChart:
    """A step chart of the pages each source landed over time, in SVG user units."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    series: list[Series]
    x_title: str


def timeline_chart(report: RunReport, width: int = 900, height: int = 300) -> TimelineChart | None:
    """The chart of ``report``'s timelines; None when no page landed."""
    drawn = [source for source in report.sources if source.timeline]
    if not drawn:
        return None
    left, top, right, bottom = 56, 12, width - 24, height - 40
    start = min(source.timeline[0].at for source in drawn)
    span = max(1.0, max((source.timeline[-1].at - start).total_seconds() for source in drawn))
    top_pages = max(source.timeline[-1].pages for source in drawn)
    y_step = _nice_step(top_pages)
    y_max = max(y_step, -(-top_pages // y_step) * y_step)

    def x(at: datetime) -> float:
        return round(left + (at - start).total_seconds() / span * (right - left), 1)

    def y(pages: int) -> float:
        return round(bottom - pages / y_max * (bottom - top), 1)

    series = []
    for index, source in enumerate(drawn):
        points, pages = [(x(source.timeline[0].at), y(0))], 0
        for point in source.timeline:
            points += [(x(point.at), y(pages)), (x(point.at), y(point.pages))]
            pages = point.pages
        points.append((float(right), y(pages)))
        series.append(
            Series(
                source=source.source,
                color=PALETTE[index % len(PALETTE)],
                points=" ".join(f"{px:g},{py:g}" for px, py in points),
                end_x=float(right),
                end_y=y(pages),
                pages=pages,
            )
        )
    step = next((step for step in TIME_STEPS if span / step <= 6), TIME_STEPS[-1])
    offset = -start.timestamp() % step  # the first tick: the first multiple of the step from the epoch
    moments = [start + timedelta(seconds=offset + n * step) for n in range(int((span - offset) // step) + 1)]
    fmt = "%H:%M:%S" if span < 86_400 else "%m-%d %H:%M"
    x_ticks = [Tick(x(at), at.strftime(fmt)) for at in moments]
    y_ticks = [Tick(y(pages), f"{pages:,}") for pages in range(0, y_max + 1, y_step)]
    zone = start.tzname() or "UTC"
    return TimelineChart(width, height, left, top, right, bottom, x_ticks, y_ticks, series, f"page fetched at ({zone})")


def _nice_step(top: int, ticks: int = 5) -> int:
    """A step of 1, 2 or 5 times a power of ten that divides 0..``top`` in at most ``ticks`` intervals."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if top <= factor * magnitude * ticks:
                return factor * magnitude
        magnitude *= 10


# -- HTML and the lake ---------------------------------------------------------------------------------------
def _size(value: int) -> str:
    """Bytes for people: 1,234 B, 12.3 KiB, 4.5 MiB."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _count(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


@cache
def _environment() -> jinja2.Environment:
    # Imported here: the operator commands read report_keys and reports without paying for Jinja2.
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(size=_size, count=_count)
    return environment


def render_html(report: RunReport) -> str:
    """``report`` as one HTML page with everything inline (no external style, script or font)."""
    return (
        _environment()
        .get_template("report.html.j2")
        .render(report=report, chart=timeline_chart(report), shown_missing=SHOWN_MISSING, shown_reasons=SHOWN_REASONS)
    )


def stored_report(ledger: Ledger, run_id: str) -> RunReport | None:
    """The run's ``report.json`` in the lake; None when there is none, or it does not read as a report of this
    version (it is then written anew)."""
    try:
        document = ledger.read_json(report_keys(run_id)[0])
        return None if document is None else RunReport.model_validate(document)
    except ValueError:  # not JSON, or not a report of this version: this one writes it anew
        return None


def _figures(report: RunReport) -> dict[str, object]:
    """What a report says, but when it was generated: what decides whether it is written again."""
    figures: dict[str, object] = json.loads(report.model_dump_json(exclude={"generated_at"}))
    return figures


def store_report(ledger: Ledger, report: RunReport, stored: RunReport | None) -> bool:
    """Put ``report.html``, the run's summary (:mod:`apilake.run_summary`) then ``report.json`` unless ``stored``
    (the lake's report.json) has the same figures; True when written. The JSON goes last: present, it vouches
    for the HTML and the summary."""
    if stored is not None and _figures(stored) == _figures(report):
        return False
    json_key, html_key = report_keys(report.run_id)
    for key, body, content_type in (
        (html_key, render_html(report), "text/html; charset=utf-8"),
        (summary_key(report.run_id), summary_body(report), "application/x-ndjson"),
        (json_key, report.model_dump_json(indent=2), "application/json"),
    ):
        ledger.client.put_object(Bucket=ledger.bucket, Key=key, Body=body.encode(), ContentType=content_type)
    return True


def write_report(
    ledger: Ledger,
    manifest: RunManifest,
    dlq_depths: Mapping[str, int] | None,
    now: datetime,
    sources_file: SourcesFile | None = None,
    status: RunStatus | None = None,
) -> RunReport:
    """Build the run's report and put ``report.json`` and ``report.html`` beside its manifest (unless the stored
    report has the same figures)."""
    report = build_report(ledger, manifest, dlq_depths, now, sources_file, status)
    store_report(ledger, report, stored_report(ledger, manifest.run_id))
    return report
