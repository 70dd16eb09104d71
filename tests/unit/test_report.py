"""The run report: built from a run's manifest and ledger (a run with a missing page, a 429-retried page, a
parked page, a chain that has not ended, a DLQ holding a message), its figures checked in the JSON and in
the HTML tables people read, and the HTML self-contained and escaping what vendors wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.ledger import NOT_NOTED, Ledger, RunManifest, ShardPlan, SourcePlan
from apilake.messages import WorkItem
from apilake.report import (
    RunReport,
    build_report,
    latency,
    render_html,
    report_keys,
    store_report,
    stored_report,
    timeline,
    timeline_chart,
    write_report,
)
from apilake.run_summary import summary_key
from tests.conftest import ROOT

RUN = "sched-20261126T010000Z"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
HOSTILE = '500 from https://api.example.com/things?page=2 <script>alert("x")</script>'


def at(second: int) -> str:
    return datetime(2026, 11, 26, 1, 0, second, tzinfo=UTC).isoformat()


def landed(records: int, second: int, **figures: Any) -> dict[str, Any]:
    """A landed marker's entry as the worker writes it (figures: attempts, throttled, latency_ms, parks)."""
    entry = {"key": "k", "sha256": "0" * 64, "records": records, "bytes": records * 100, "written": True}
    return {**entry, "has_next": False, "fetched_at": at(second), **figures}


def failure(error: str, reason: str, attempt: int) -> dict[str, Any]:
    return {"error": error, "reason": reason, "attempt": attempt, "at": at(30)}


MANIFEST = RunManifest(
    run_id=RUN,
    ingestion_date=date(2026, 11, 26),
    created_at=datetime(2026, 11, 26, 1, 0, tzinfo=UTC),
    trigger="schedule",
    sources={
        "api-a": SourcePlan(shards=[ShardPlan(shard="2026-11-25", mode="fanout", expected_pages=3)]),
        "api-b": SourcePlan(shards=[ShardPlan(shard="all", mode="chain")]),
        "api-c": SourcePlan(shards=[ShardPlan(shard="all", mode="chain")]),
    },
)


def work(source: str, shard: str, page: int) -> WorkItem:
    return WorkItem(run_id=RUN, source=source, ingestion_date=MANIFEST.ingestion_date, shard=shard, page=page)


@pytest.fixture(name="ledger")
def run_ledger() -> Iterator[Ledger]:
    """The run as the ledger has it at 7 a.m.:
    - api-a (fan-out, 3 pages): page 1 landed after two 429s and a third request; page 2 failed (500, its
      reason quoting the vendor's HTML); page 3 landed after two parks;
    - api-b (a chain): pages 1 and 2 landed, recorded by a worker older than the request figures; ended;
    - api-c (a chain): page 1 landed, page 2 failed on its first attempt, the chain not ended."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        ledger = Ledger(s3, "lake")
        ledger.write_manifest(MANIFEST)
        ledger.mark_landed(
            [
                (work("api-a", "2026-11-25", 1), landed(10, 2, attempts=3, throttled=2, latency_ms=120.0, parks=0)),
                (work("api-a", "2026-11-25", 3), landed(4, 9, attempts=1, throttled=0, latency_ms=80.0, parks=2)),
            ]
        )
        ledger.mark_failure(work("api-a", "2026-11-25", 2), failure("TransientHttpError", HOSTILE, 3))
        old = {k: v for k, v in landed(7, 1).items() if k != "fetched_at"}
        ledger.mark_landed([(work("api-b", "all", 1), old), (work("api-b", "all", 2), landed(3, 4))])
        ledger.mark_end(work("api-b", "all", 2))
        ledger.mark_landed([(work("api-c", "all", 1), landed(5, 5, attempts=1, throttled=0, latency_ms=40.0, parks=0))])
        ledger.mark_failure(work("api-c", "all", 2), failure("BadResponseError", "not JSON", 1))
        yield ledger


def test_the_report_of_a_run_with_failures_has_its_figures_and_reasons(ledger: Ledger) -> None:
    # When the report is built, with api-a's DLQ holding a message and api-c's depth unknown
    report = build_report(ledger, MANIFEST, {"api-a": 1, "api-b": 0}, NOW)
    # Then the run is incomplete: two pages missing, in two sources
    assert (report.run_id, report.trigger, report.generated_at, report.complete) == (RUN, "schedule", NOW, False)
    assert report.verdict == "2 pages missing in 2 sources"
    assert (report.pages_expected, report.pages_landed, report.pages_missing) == (None, 5, 2)
    assert (report.records, report.bytes) == (29, 2900)
    # And each source has its figures (requests, retries, 429s, parks, DLQ, latency) as the ledger has them
    a, b, c = report.sources
    figures = [
        (s.source, s.complete, s.pages_expected, s.pages_landed, s.pages_missing, s.records, s.requests)
        for s in report.sources
    ]
    assert figures == [
        ("api-a", False, 3, 2, 1, 14, 4),
        ("api-b", True, 2, 2, 0, 10, 2),
        ("api-c", False, None, 1, 1, 5, 1),
    ]
    assert [(s.retries, s.throttled, s.parked_pages, s.parks, s.dlq_depth) for s in report.sources] == [
        (2, 2, 1, 2, 1),
        (0, 0, 0, 0, 0),
        (0, 0, 0, 0, None),
    ]
    assert (a.latency_ms.pages, a.latency_ms.p50, a.latency_ms.p90, a.latency_ms.p99) == (2, 100.0, 116.0, 119.6)
    assert (b.latency_ms.pages, b.latency_ms.p50) == (0, None)
    # And what is missing comes with why: the ledger's failure reasons and the chain's note
    assert [(m.shard, m.page, m.reason) for m in a.missing] == [
        ("2026-11-25", 2, f"TransientHttpError: {HOSTILE} (attempt 3)")
    ]
    assert [(m.page, m.reason) for m in c.missing] == [(2, "BadResponseError: not JSON (attempt 1)")]
    assert c.shards[0].reasons == ["chain not ended: no page after 1 has landed yet"]
    assert report.reasons == [
        f"api-a, shard 2026-11-25, page 2: TransientHttpError: {HOSTILE} (attempt 3)",
        "api-c, shard all, page 2: BadResponseError: not JSON (attempt 1)",
        "api-c, shard all: chain not ended: no page after 1 has landed yet",
    ]
    # And the timeline counts each source's pages by when they were fetched (api-b's old page has no time)
    assert [(p.at.second, p.pages) for p in a.timeline] == [(2, 1), (9, 2)]
    assert [(p.at.second, p.pages) for p in b.timeline] == [(4, 1)]


def test_a_page_missing_without_a_noted_failure_says_so(ledger: Ledger) -> None:
    # Given api-b's chain planned as a fan-out of 3 pages instead, page 3 never tried
    manifest = MANIFEST.model_copy(
        update={"sources": {"api-b": SourcePlan(shards=[ShardPlan(shard="all", mode="fanout", expected_pages=3)])}}
    )
    (source,) = build_report(ledger, manifest, None, NOW).sources
    assert [(m.page, m.reason) for m in source.missing] == [(3, NOT_NOTED)]
    assert source.dlq_depth is None


@pytest.mark.parametrize(
    ("plan", "landed_pages", "missing", "shard_reasons"),
    [
        (
            ShardPlan(shard="all", mode="chain"),
            [1, 2],
            [(3, "chain not ended: no page after 2 has landed yet")],
            [],
        ),
        (ShardPlan(shard="all", mode="chain"), [], [(1, "chain not started")], []),
        (
            ShardPlan(shard="2026-11-25", mode="fanout", error="probe failed: 503 from x"),
            [],
            [(1, "probe failed: 503 from x")],
            [],
        ),
    ],
    ids=["a chain going or stalled", "a chain not started", "a plan that failed"],
)
def test_a_shard_that_has_not_ended_misses_the_page_it_awaits_as_the_metric_counts(
    ledger: Ledger,
    plan: ShardPlan,
    landed_pages: list[int],
    missing: list[tuple[int, str]],
    shard_reasons: list[str],
) -> None:
    # Given a source whose one shard has not ended, no failure noted
    manifest = MANIFEST.model_copy(update={"sources": {"api-d": SourcePlan(shards=[plan])}})
    ledger.mark_landed([(work("api-d", plan.shard, page), landed(5, page)) for page in landed_pages])
    # When its report is built
    (source,) = build_report(ledger, manifest, None, NOW).sources
    # Then it misses the page the shard awaits, why being the shard's note (said once), as the status counts it
    shard = ledger.status(manifest).sources[0].shards[0]
    assert [(m.page, m.reason) for m in source.missing] == missing
    assert source.pages_missing == source.shards[0].pages_missing == shard.pages_missing == len(missing)
    assert source.shards[0].reasons == shard_reasons


def test_the_dlq_warning_prints_a_command_that_runs_and_says_what_it_counts(ledger: Ledger) -> None:
    html = " ".join(render_html(build_report(ledger, MANIFEST, {"api-a": 2}, NOW)).split())
    assert "<code>apilake dlq peek --stack-name STACK --source api-a</code>" in html
    assert f"<code>apilake status --run {RUN}</code>" in html
    assert "waiting, in flight or delayed, as <code>apilake status</code> counts them" in html


class Tables(HTMLParser):
    """The text of each table's rows (cells stripped), and the text of the verdict banner."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.banner: list[str] = []
        self._in_banner = 0
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div" and "verdict" in (dict(attrs).get("class") or ""):
            self._in_banner = 1
        elif tag == "div" and self._in_banner:
            self._in_banner += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "div" and self._in_banner:
            self._in_banner -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_banner and data.strip():
            self.banner.append(" ".join(data.split()))


def test_the_html_shows_the_figures_the_verdict_and_the_reasons(ledger: Ledger) -> None:
    # Given the report of the run with failures
    report = build_report(ledger, MANIFEST, {"api-a": 1, "api-b": 0}, NOW)
    # When it is rendered
    html = render_html(report)
    page = Tables(html)
    # Then the banner gives the verdict and the reasons, the vendor's text escaped
    assert page.banner[0] == "Incomplete: 2 pages missing in 2 sources"
    assert f"api-a, shard 2026-11-25, page 2: TransientHttpError: {HOSTILE} (attempt 3)" in page.banner
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    # And the sources table shows each source's figures, and the totals
    sources = page.tables[0]
    assert sources[0][:12] == [
        "Source", "Status", "Pages landed", "Expected", "Missing", "Records", "Data", "Requests", "Retries",
        "429s", "Parked", "DLQ",
    ]  # fmt: skip
    assert sources[1:] == [
        ["api-a", "incomplete", "2", "3", "1", "14", "1.4 KiB", "4", "2", "2", "1", "1", "100.0", "116.0", "119.6"],
        ["api-b", "complete", "2", "2", "0", "10", "1,000 B", "2", "0", "0", "0", "0", "—", "—", "—"],
        ["api-c", "incomplete", "1", "—", "1", "5", "500 B", "1", "0", "0", "0", "—", "40.0", "40.0", "40.0"],
        ["All", "", "5", "—", "2", "29", "2.8 KiB", "7", "2", "2", "1", "—", "", "", ""],
    ]
    # And what is missing is listed per source with why
    assert page.tables[1][1:] == [["2026-11-25", "2", f"TransientHttpError: {HOSTILE} (attempt 3)"]]
    assert page.tables[2][1:] == [
        ["all", "shard", "chain not ended: no page after 1 has landed yet"],
        ["all", "2", "BadResponseError: not JSON (attempt 1)"],
    ]
    # And the DLQ's message is pointed at, and the timeline is drawn: a line per source that landed a timed page
    assert "DLQ of api-a holds 1 message" in " ".join(html.split()).replace("<b>", "").replace("</b>", "")
    assert html.count("<polyline") == 3


class Resources(HTMLParser):
    """The elements and attributes through which a page loads something, and its style sheets' text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.loading: list[str] = []
        self.links: list[str] = []
        self.style: list[str] = []
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "link", "img", "iframe", "object", "embed", "image", "use"):
            self.loading.append(tag)
        self.loading += [f"{tag} {name}" for name, _ in attrs if name in ("src", "srcset", "xlink:href")]
        self.links += [value or "" for name, value in attrs if name == "href"]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style.append(data)


def test_the_html_loads_nothing_from_elsewhere(ledger: Ledger) -> None:
    # Given the rendered report
    page = Resources(render_html(build_report(ledger, MANIFEST, {"api-a": 1}, NOW)))
    # Then no element loads anything, its links stay in the page, and its style imports nothing
    assert page.loading == []
    assert all(link.startswith("#") for link in page.links)
    assert page.style and not any(word in "".join(page.style) for word in ("url(", "@import", "@font-face"))


def test_a_complete_run_says_so(ledger: Ledger) -> None:
    manifest = MANIFEST.model_copy(update={"sources": {"api-b": MANIFEST.sources["api-b"]}})
    report = build_report(ledger, manifest, {"api-b": 0}, NOW)
    assert (report.complete, report.verdict, report.reasons) == (True, "complete", [])
    page = Tables(render_html(report))
    assert page.banner[:2] == [
        "Complete",
        "Every planned page landed and reconciled: 2 pages, 10 records, 1,000 B in 1 source.",
    ]
    # And with every DLQ's depth known, the totals have theirs
    assert page.tables[0][-1][:12] == ["All", "", "2", "2", "0", "10", "1,000 B", "2", "0", "0", "0", "0"]


def test_write_report_puts_the_json_and_the_html_beside_the_manifest(ledger: Ledger) -> None:
    # When the report is written
    report = write_report(ledger, MANIFEST, {"api-a": 1}, NOW)
    # Then both keys are beside the manifest, the JSON the report itself, the HTML its rendering
    json_key, html_key = report_keys(RUN)
    assert (json_key, html_key) == (f"ledger/runs/run={RUN}/report.json", f"ledger/runs/run={RUN}/report.html")
    s3 = ledger.client
    stored = s3.get_object(Bucket="lake", Key=json_key)
    assert stored["ContentType"] == "application/json"
    assert RunReport.model_validate(json.loads(stored["Body"].read())) == report
    assert stored_report(ledger, RUN) == report
    page = s3.get_object(Bucket="lake", Key=html_key)
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert page["Body"].read().decode() == render_html(report)


def puts(ledger: Ledger) -> list[str]:
    """The keys the ledger's client puts from now on, in order."""
    keys: list[str] = []
    ledger.client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: keys.append(params["Key"])
    )
    return keys


@pytest.mark.parametrize(
    ("later", "depths", "written"),
    [
        (timedelta(minutes=15), {"api-a": 1}, False),
        (timedelta(0), {"api-a": 2}, True),
        (timedelta(minutes=15), None, True),
    ],
    ids=["the same figures, later: not written", "a DLQ depth changed: written", "a depth now unknown: written"],
)
def test_a_report_is_written_again_only_when_a_figure_changed(
    ledger: Ledger, later: timedelta, depths: dict[str, int] | None, written: bool
) -> None:
    # Given the run's report stored
    write_report(ledger, MANIFEST, {"api-a": 1}, NOW)
    stored = stored_report(ledger, RUN)
    # When it is built again and stored
    keys = puts(ledger)
    report = build_report(ledger, MANIFEST, depths, NOW + later)
    # Then it is put only when a figure differs: the HTML and the run's summary first, the JSON (which vouches
    # for them) last
    assert store_report(ledger, report, stored) is written
    json_key, html_key = report_keys(RUN)
    assert keys == ([html_key, summary_key(RUN), json_key] if written else [])
    assert (stored_report(ledger, RUN) == report) is written


@pytest.mark.parametrize("body", [b'{"run_id": "older"}', b"<html>not JSON"], ids=["another version", "not JSON"])
def test_a_stored_report_that_does_not_read_is_written_anew(ledger: Ledger, body: bytes) -> None:
    ledger.client.put_object(Bucket="lake", Key=report_keys(RUN)[0], Body=body)
    assert stored_report(ledger, RUN) is None and stored_report(ledger, "never-reported") is None
    assert store_report(ledger, build_report(ledger, MANIFEST, None, NOW), None)
    assert stored_report(ledger, RUN) is not None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], (0, None, None, None)),
        ([42.04], (1, 42.0, 42.0, 42.0)),
        ([80.0, 120.0], (2, 100.0, 116.0, 119.6)),
        ([float(n) for n in range(1, 101)], (100, 50.5, 90.1, 99.0)),
    ],
)
def test_latency_percentiles(
    values: list[float], expected: tuple[int, float | None, float | None, float | None]
) -> None:
    result = latency(values)
    assert (result.pages, result.p50, result.p90, result.p99) == expected


def test_the_timeline_counts_pages_by_the_moment_they_were_fetched() -> None:
    moments = [datetime(2026, 11, 26, 1, 0, s, tzinfo=UTC) for s in (5, 1, 5, 3)]
    assert [(p.at.second, p.pages) for p in timeline(moments)] == [(1, 1), (3, 2), (5, 4)]


def test_the_chart_spans_the_run_and_every_line_ends_at_its_pages(ledger: Ledger) -> None:
    # Given the run's report (api-a's pages fetched at :02 and :09, api-b's at :04, api-c's at :05)
    report = build_report(ledger, MANIFEST, None, NOW)
    # When its chart is laid out
    chart = timeline_chart(report)
    # Then the time axis runs from the first page to the last, its ticks in whole seconds
    assert chart is not None
    assert [tick.label for tick in chart.x_ticks] == ["01:00:02", "01:00:04", "01:00:06", "01:00:08"]
    assert chart.x_ticks[0].at == chart.left
    # And each source's line starts at zero at its first page and ends at the right edge at its page count
    right = [("api-a", 2, 876.0), ("api-b", 1, 876.0), ("api-c", 1, 876.0)]
    assert [(s.source, s.pages, s.end_x) for s in chart.series] == right
    first = chart.series[0].points.split()
    assert first[0] == f"{chart.left:g},{chart.bottom:g}" and first[-1] == f"{chart.right:g},{chart.series[0].end_y:g}"
    assert [tick.label for tick in chart.y_ticks] == ["0", "1", "2"]
    assert chart.y_ticks[-1].at == chart.top and chart.series[0].end_y == chart.top


def test_no_chart_when_no_page_landed() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        report = build_report(Ledger(s3, "lake"), MANIFEST, None, NOW)
    assert timeline_chart(report) is None
    assert "No page has landed in this run." in render_html(report)


@pytest.mark.parametrize("function", ["worker", "planner"])
def test_the_worker_and_the_planner_do_not_load_jinja2(function: str) -> None:
    # Given a fresh interpreter with the function's folder and the layer's package on its path
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]; import app\n"
        "print(sorted(m for m in ('jinja2', 'apilake.report') if m in sys.modules))"
    )
    # When it imports the handler, as a cold start does
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "functions" / function), str(ROOT / "layers" / "common")],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then neither the report nor Jinja2 was loaded: only the completeness check renders reports
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_jinja2_is_loaded_to_render_only() -> None:
    # Given a fresh interpreter that reads a report's keys (as `apilake report` does), then renders one
    code = (
        "import sys; from datetime import UTC, datetime; from apilake.report import RunReport, render_html\n"
        "print('jinja2' in sys.modules)\n"
        "now = datetime.now(UTC)\n"
        "render_html(RunReport(run_id='r', trigger='manual', ingestion_date='2026-11-26', created_at=now,\n"
        "    generated_at=now, complete=True, pages_expected=0, pages_landed=0, pages_missing=0, records=0,\n"
        "    bytes=0, sources=[]))\n"
        "print('jinja2' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    # Then Jinja2 came in with the rendering, not before
    assert (done.returncode, done.stdout.split()) == (0, ["False", "True"]), done.stderr
