"""Fixtures shared by every test: fake AWS credentials, fresh per-container caches, the handlers."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from apilake.aws import cached_sources, default_clients, default_queue_locator, default_vendor_clients

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "apilake")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(autouse=True)
def _fresh_container() -> Iterator[None]:
    """Every test starts as a cold Lambda container: no cached clients, sources, queue URLs or pacers."""
    caches = (cached_sources, default_clients, default_vendor_clients, default_queue_locator)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def load_event(name: str) -> dict[str, Any]:
    """An event fixture from events/, the same file `sam local invoke -e` takes."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def load_handler_module(function: str) -> ModuleType:
    """functions/<function>/app.py as its own module (both handlers are called app.py)."""
    spec = importlib.util.spec_from_file_location(f"{function}_app", ROOT / "functions" / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
