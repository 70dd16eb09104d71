"""The template, parsed (CloudFormation short-form tags would need a custom loader; ours uses long forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import SourcesFile, load_sources

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "template.yaml").read_text())
    return parsed


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"]
    return found


@pytest.fixture(scope="session")
def sources() -> SourcesFile:
    return load_sources(ROOT / "layers" / "common" / "sources.yaml")
