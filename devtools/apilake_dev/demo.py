"""`apilake demo`: the four seed sources against bundled fake vendors, end to end, on this machine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from apilake_dev import paths
from apilake_dev.local.run import LocalRunResult, Printer, run_local
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault

SHIPPED_SOURCES = paths.SOURCES
PLANNER_EVENT = paths.PLANNER_EVENT
DEMO_KEY = "demo-key-not-a-secret"
# Queues' visibility timeout in the demo (the template's is 1800 s; workers get a sixth of it, 10 s).
DEMO_VISIBILITY_SECONDS = 60

# The seed sources, each served in its own pagination style by the fake vendor.
ENDPOINTS = {
    "api-a": "/page_number/api-a",
    "api-b": "/cursor/api-b",
    "api-c": "/next_url/api-c",
    "api-d": "/link_header/api-d",
}


def datasets(scale: float = 1.0) -> list[Dataset]:
    sizes = {"api-a": 1200, "api-b": 500, "api-c": 1000, "api-d": 450}
    return [Dataset(name, total=max(1, int(size * scale))) for name, size in sizes.items()]


def inject_weather(vendor: FakeVendor) -> None:
    """A few bad moments along the way, each retried inside the worker: throttling and 5xx."""
    vendor.inject("page_number", "api-a", 3, Fault.throttle(retry_after=1))
    vendor.inject("page_number", "api-a", 7, Fault("status", status=503))
    vendor.inject("cursor", "api-b", 2, Fault.throttle(retry_after=1, http_date=True))
    vendor.inject("next_url", "api-c", 2, Fault("status", status=502))
    vendor.inject("link_header", "api-d", 3, Fault.throttle(retry_after=1))


def demo_sources(vendor: FakeVendor, target: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The shipped sources file with each source pointed at its fake vendor endpoint."""
    document = yaml.safe_load(SHIPPED_SOURCES.read_text())
    for source in document["sources"]:
        source["base_url"] = vendor.base_url
        source["path"] = ENDPOINTS[source["name"]]
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


EXAMPLE_QUERIES = [
    (
        "Records per source and ingestion date",
        "SELECT source, ingestion_date, shard, count(*) AS records, count(DISTINCT id) AS distinct_ids "
        "FROM raw GROUP BY ALL ORDER BY ALL",
    ),
    (
        "The latest records of api-b",
        "SELECT id, updated_at, amount, currency, customer.country AS country "
        "FROM source_api_b ORDER BY updated_at DESC LIMIT 5",
    ),
]


def run_demo(
    home: Path,
    scale: float = 1.0,
    weather: Callable[[FakeVendor], None] = inject_weather,
    source_overrides: dict[str, Any] | None = None,
    visibility_timeout: int = DEMO_VISIBILITY_SECONDS,
    echo: Printer = print,
) -> tuple[LocalRunResult, list[Dataset]]:
    """Fake vendors up, the shipped sources pointed at them, the local flow run; a fresh lake folder."""
    for folder in ("lake", "logs", "dlq"):
        shutil.rmtree(home / folder, ignore_errors=True)
    sets = datasets(scale)
    protected = authenticated(SHIPPED_SOURCES)
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
