"""`apilake demo`: the example sources (examples/) against bundled fake vendors, end to end, on this machine."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field

from apilake.config import Source, load_sources
from apilake.marks import MarkReport, MarkStore, mark_reports
from apilake_dev import paths
from apilake_dev.local.run import LocalRun, LocalRunResult, Printer
from apilake_dev.vendors.changing import ChangingDataset
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault

EXAMPLE_SOURCES = paths.EXAMPLE_SOURCES
PLANNER_EVENT = paths.PLANNER_EVENT
DEMO_KEY = "demo-key-not-a-secret"
# Queues' visibility timeout in the demo (the template's is 1800 s; workers get a sixth of it, 10 s).
DEMO_VISIBILITY_SECONDS = 60


class Weather(BaseModel):
    """A fault the demo injects on one page (the worker retries it)."""

    model_config = ConfigDict(extra="forbid")
    page: int = Field(ge=1)
    status: int = Field(ge=400, le=599)
    retry_after: str | None = None
    http_date: bool = False

    def fault(self) -> Fault:
        if self.status == 429:
            return Fault.throttle(
                retry_after=float(self.retry_after) if self.retry_after else None, http_date=self.http_date
            )
        return Fault("status", status=self.status, retry_after=self.retry_after)


class ExampleVendor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: int = Field(ge=1)
    weather: list[Weather] = Field(default_factory=list)
    changes: int = Field(default=0, ge=0)  # incremental sources: records updated between the demo's two runs


def example_vendors() -> dict[str, ExampleVendor]:
    """examples/vendors.yaml: the fake vendor behind each example source."""
    raw = yaml.safe_load(paths.EXAMPLE_VENDORS.read_text(encoding="utf-8"))
    return {name: ExampleVendor.model_validate(spec) for name, spec in raw.items()}


def endpoint(source: Source) -> str:
    """Where the fake vendor serves a source: the path names its pagination style and its dataset."""
    return f"/{source.pagination.type}/{source.name}"


def datasets(scale: float = 1.0) -> list[Dataset]:
    """The example vendors' datasets; an incremental source's serves the records updated after a value."""
    sources = load_sources(EXAMPLE_SOURCES)
    found: list[Dataset] = []
    for name, vendor in example_vendors().items():
        total = max(1, int(vendor.records * scale))
        incremental = sources.get(name).incremental
        if incremental is not None:
            found.append(ChangingDataset(name, total, after_param=incremental.param))
        else:
            found.append(Dataset(name, total))
    return found


def changes(scale: float = 1.0) -> dict[str, int]:
    """Incremental example -> how many of its records change between the demo's two runs."""
    return {name: max(1, int(v.changes * scale)) for name, v in example_vendors().items() if v.changes}


def inject_weather(vendor: FakeVendor) -> None:
    """A few bad moments along the way, each retried inside the worker: throttling and 5xx."""
    sources = load_sources(EXAMPLE_SOURCES)
    for name, spec in example_vendors().items():
        for weather in spec.weather:
            vendor.inject(sources.get(name).pagination.type, name, weather.page, weather.fault())


def demo_sources(vendor: FakeVendor, target: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The example sources file with each source pointed at its fake vendor endpoint."""
    document = yaml.safe_load(EXAMPLE_SOURCES.read_text())
    sources = load_sources(EXAMPLE_SOURCES)
    for source in document["sources"]:
        source["base_url"] = vendor.base_url
        source["path"] = endpoint(sources.get(source["name"]))
        source.update(overrides or {})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def authenticated(sources_file: Path) -> dict[str, str]:
    """source name -> secret name, for the sources that authenticate."""
    document = yaml.safe_load(sources_file.read_text())
    return {s["name"]: s["auth"]["secret_name"] for s in document["sources"] if "secret_name" in s.get("auth", {})}


def planner_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(PLANNER_EVENT.read_text())
    return event


def example_queries() -> list[tuple[str, str]]:
    """examples/queries.sql: (title, SQL) pairs, each statement after its ``-- title`` line."""
    queries = []
    for block in paths.EXAMPLES.joinpath("queries.sql").read_text(encoding="utf-8").split("-- ")[1:]:
        title, _, sql = block.partition("\n")
        queries.append((title.strip(), " ".join(sql.split()).rstrip(";")))
    return queries


@dataclass
class DemoResult:
    """The demo's two runs: the nightly one, then (when an example is incremental) the next one, after the
    vendor changed some records: only those land. ``requests``: vendor requests per incremental source and run."""

    first: LocalRunResult
    datasets: list[Dataset]
    second: LocalRunResult | None = None
    changed: dict[str, list[str]] = field(default_factory=dict)
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)
    marks: list[dict[str, MarkReport]] = field(default_factory=list)  # after each run

    @property
    def ok(self) -> bool:
        return self.first.ok and (self.second is None or self.second.ok)

    @property
    def last(self) -> LocalRunResult:
        return self.second or self.first


def second_run_event(first: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """The next run, a day after the first (a run by hand of the incremental sources, on a date of its own)."""
    when = datetime.fromisoformat(first["time"]) + timedelta(days=1)
    return {"sources": sources, "run_id": f"demo-{when:%Y%m%dT%H%M%SZ}", "ingestion_date": when.date().isoformat()}


def _requests(vendor: FakeVendor, name: str) -> int:
    with vendor.state.lock:
        return sum(1 for url in vendor.state.seen_urls if urlsplit(url).path.endswith(f"/{name}"))


def run_demo(
    home: Path,
    scale: float = 1.0,
    weather: Callable[[FakeVendor], None] = inject_weather,
    source_overrides: dict[str, Any] | None = None,
    visibility_timeout: int = DEMO_VISIBILITY_SECONDS,
    echo: Printer = print,
    second_run: bool = True,
) -> DemoResult:
    """Fake vendors up, the example sources pointed at them, the local flow run; a fresh lake folder. Then,
    with ``second_run``, the incremental examples' records change at the vendor and they run again."""
    for folder in ("lake", "logs", "dlq"):
        shutil.rmtree(home / folder, ignore_errors=True)
    sets = datasets(scale)
    protected = authenticated(EXAMPLE_SOURCES)
    changing = {d.name: d for d in sets if isinstance(d, ChangingDataset)}
    with FakeVendor(sets, api_key=DEMO_KEY, protected=set(protected)) as vendor:
        weather(vendor)
        echo(f"fake vendors at {vendor.base_url}: " + ", ".join(f"{d.name} {d.total} records" for d in sets))
        sources = demo_sources(vendor, home / "demo-sources.yaml", source_overrides)
        secrets = dict.fromkeys(protected.values(), DEMO_KEY)
        event = planner_event()
        with LocalRun(sources, home, secrets, visibility_timeout, echo=echo) as run:
            marks = MarkStore(run.s3, run.deployment.bucket)
            run_id, planner_error = run.plan(event)
            result = DemoResult(run.finish(run_id, run.drain(), planner_error), sets)
            result.marks.append(_reports(marks, run_id))
            if not second_run or not changing:
                return result
            first_requests = {name: _requests(vendor, name) for name in changing}
            at = datetime.fromisoformat(event["time"]) + timedelta(hours=12)
            result.changed = {name: changing[name].touch(n, at) for name, n in changes(scale).items()}
            echo(
                "\nthe vendor changed records: "
                + ", ".join(f"{name} {len(ids)}" for name, ids in result.changed.items())
                + "; the incremental sources run again, a day later"
            )
            run.per_source, run.started = {}, time.monotonic()
            run_id, planner_error = run.plan(second_run_event(event, sorted(changing)))
            result.second = run.finish(run_id, run.drain(), planner_error)
            result.marks.append(_reports(marks, run_id))
            result.requests = {
                name: (first_requests[name], _requests(vendor, name) - first_requests[name]) for name in changing
            }
    return result


def _reports(marks: MarkStore, run_id: str | None) -> dict[str, MarkReport]:
    manifest = marks.ledger.read_manifest(run_id) if run_id else None
    return mark_reports(marks, manifest) if manifest else {}
