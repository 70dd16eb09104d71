"""The run report of a local run: `apilake demo` with one page that always fails and one the vendor makes
wait; the report lands in the lake (then the lake folder) with the figures and the reason, and its HTML
renders in headless Chromium.

``python -m tests.integration.test_report_local docs/report.png`` runs the same run on the whole demo data
set and takes the screenshot the README shows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from apilake.config import load_sources
from apilake.report import RunReport
from apilake_dev import demo
from apilake_dev.vendors.fake import FakeVendor, Fault

pytestmark = pytest.mark.slow

EXAMPLES = load_sources(demo.EXAMPLE_SOURCES)
# The example that fans out loses its page 2 (500 whatever happens); the last example's page 2 is made to
# wait longer than a worker waits inline (Retry-After 20 s): it is parked once, then lands.
BROKEN = next(s for s in EXAMPLES.sources if s.pagination.type in ("page_number", "offset"))
PARKED = EXAMPLES.sources[-1]
PARK_SECONDS = 20
# Short retries, and redeliveries every two seconds: the broken page reaches its DLQ in seconds.
OVERRIDES = {"retries": {"max_attempts": 2, "base_delay_seconds": 0.01}, "budget": {"max_concurrency": 2}}
VISIBILITY_SECONDS = 2
SCALE = 0.25  # a page 2 for every example (100 records a page)
SCREEN = (1280, 1000)
# Colours of the stylesheet: the verdict banner of an incomplete run, the first source's line in the chart.
BANNER_BAD = (255, 235, 233)
FIRST_LINE = (0, 114, 178)


def weather(vendor: FakeVendor) -> None:
    """The demo's weather, the broken page and the parked one."""
    demo.inject_weather(vendor)
    vendor.inject(BROKEN.pagination.type, BROKEN.name, 2, Fault("status", status=500), forever=True)
    vendor.inject(PARKED.pagination.type, PARKED.name, 2, Fault.throttle(retry_after=PARK_SECONDS))


@dataclass
class FailedRun:
    home: Path
    result: demo.DemoResult
    printed: list[str]


def run_with_failures(home: Path, scale: float) -> FailedRun:
    printed: list[str] = []
    result = demo.run_demo(
        home,
        scale=scale,
        weather=weather,
        source_overrides=OVERRIDES,
        visibility_timeout=VISIBILITY_SECONDS,
        echo=printed.append,
        second_run=False,
    )
    return FailedRun(home, result, printed)


def screenshot(html: Path, png: Path, size: tuple[int, int]) -> None:
    """``html`` as headless Chromium draws it in a window of ``size``, as a PNG at ``png``."""
    chromium = shutil.which("chromium")
    assert chromium is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # as root (CI), Chromium's sandbox refuses to start
                "--disable-gpu",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                f"--screenshot={png}",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailedRun]:
    yield run_with_failures(tmp_path_factory.mktemp("report"), scale=SCALE)


def test_a_local_run_writes_its_report_into_the_lake_and_says_where(failed_run: FailedRun) -> None:
    run = failed_run.result.first
    # Then the report is in the lake folder, beside the run's manifest, and the run said where
    folder = failed_run.home / "lake" / "ledger" / "runs" / f"run={run.run_id}"
    assert run.report == folder / "report.html" and run.report.is_file()
    assert f"run report: {folder / 'report.html'}" in failed_run.printed
    # And its JSON has the run incomplete, the broken page missing with its reason, its DLQ holding it
    report = RunReport.model_validate_json((folder / "report.json").read_text())
    assert (report.run_id, report.complete, report.verdict) == (run.run_id, False, "1 page missing in 1 source")
    sources = {source.source: source for source in report.sources}
    broken = sources[BROKEN.name]
    assert [(missing.page, "500 from" in missing.reason) for missing in broken.missing] == [(2, True)]
    assert {name: source.dlq_depth for name, source in sources.items()} == {
        name: 1 if name == BROKEN.name else 0 for name in sources
    }
    # And the parked page landed, counted as parked; the demo's weather (a 502 retried at once) as a retry
    assert (sources[PARKED.name].parked_pages, sources[PARKED.name].complete) == (1, True)
    assert sum(source.retries for source in report.sources) >= 1
    # And the figures agree with the run's own counts
    for name, summary in run.sources.items():
        assert (sources[name].pages_landed, sources[name].records) == (summary.pages, summary.records)


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="no chromium binary on PATH (Debian: apt-get install chromium): the report was not rendered",
)
def test_the_report_renders_in_headless_chromium(failed_run: FailedRun, tmp_path: Path) -> None:
    run = failed_run.result.first
    assert run.report is not None
    # When Chromium opens the report and takes a screenshot
    png = tmp_path / "report.png"
    screenshot(run.report, png, SCREEN)
    # Then it is a PNG of the window's size, drawn: the red banner of an incomplete run, the chart's lines
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", SCREEN)
        counted = image.convert("RGB").getcolors(SCREEN[0] * SCREEN[1])
    assert counted is not None
    colors = {color: count for count, color in counted}
    assert len(colors) > 50, "a blank or nearly blank page"
    assert colors.get(BANNER_BAD, 0) > 10_000, "no verdict banner of an incomplete run"
    assert colors.get(FIRST_LINE, 0) > 100, "no timeline drawn"


if __name__ == "__main__":
    # The screenshot in docs/: the whole demo data set, the same failures.
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png")
    with tempfile.TemporaryDirectory() as home:
        made = run_with_failures(Path(home), scale=1.0)
        assert made.result.first.report is not None
        screenshot(made.result.first.report, target, (1280, 1720))
    print(f"wrote {target}")
