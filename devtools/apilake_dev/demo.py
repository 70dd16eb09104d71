"""`apilake demo`: the example sources (examples/) against bundled fake vendors, end to end, on this machine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from apilake.config import Source, load_sources
from apilake_dev import paths
from apilake_dev.local.run import LocalRunResult, Printer, run_local
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


def example_vendors() -> dict[str, ExampleVendor]:
    """examples/vendors.yaml: the fake vendor behind each example source."""
    raw = yaml.safe_load(paths.EXAMPLE_VENDORS.read_text(encoding="utf-8"))
    return {name: ExampleVendor.model_validate(spec) for name, spec in raw.items()}


def endpoint(source: Source) -> str:
    """Where the fake vendor serves a source: the path names its pagination style and its dataset."""
    return f"/{source.pagination.type}/{source.name}"


def datasets(scale: float = 1.0) -> list[Dataset]:
    return [Dataset(name, total=max(1, int(v.records * scale))) for name, v in example_vendors().items()]


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


def run_demo(
    home: Path,
    scale: float = 1.0,
    weather: Callable[[FakeVendor], None] = inject_weather,
    source_overrides: dict[str, Any] | None = None,
    visibility_timeout: int = DEMO_VISIBILITY_SECONDS,
    echo: Printer = print,
) -> tuple[LocalRunResult, list[Dataset]]:
    """Fake vendors up, the example sources pointed at them, the local flow run; a fresh lake folder."""
    for folder in ("lake", "logs", "dlq"):
        shutil.rmtree(home / folder, ignore_errors=True)
    sets = datasets(scale)
    protected = authenticated(EXAMPLE_SOURCES)
    with FakeVendor(sets, api_key=DEMO_KEY, protected=set(protected)) as vendor:
        weather(vendor)
        echo(f"fake vendors at {vendor.base_url}: " + ", ".join(f"{d.name} {d.total} records" for d in sets))
        sources = demo_sources(vendor, home / "demo-sources.yaml", source_overrides)
        result = run_local(
            sources,
            home,
            planner_event(),
            secrets=dict.fromkeys(protected.values(), DEMO_KEY),
            visibility_timeout=visibility_timeout,
            echo=echo,
        )
    return result, sets
