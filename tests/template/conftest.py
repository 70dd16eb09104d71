"""The template as SAM CLI reads it, and the sources file it is generated from.

Every assertion derives from the sources file under test (``APILAKE_ROOT`` points the tests at
another checkout, e.g. a copy whose sources were replaced), never from a list of names.
"""

from __future__ import annotations

from typing import Any

import pytest

from apilake.config import SourcesFile, load_sources
from apilake_dev import paths
from apilake_dev.template.generate import parse_template

ROOT = paths.ROOT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``source``: each source of the sources file, one test each."""
    if "source" in metafunc.fixturenames:
        names = [s.name for s in load_sources(paths.SOURCES).sources]
        metafunc.parametrize("source", names, ids=names)


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return parse_template(paths.TEMPLATE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"]
    return found


@pytest.fixture(scope="session")
def sources() -> SourcesFile:
    return load_sources(paths.SOURCES)
