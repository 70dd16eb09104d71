"""Where things are in this repository: one place for every path the dev tools use.

The dev tools run from a checkout (``pip install -e .[dev]``); the operator commands never need these.
"""

from __future__ import annotations

import os
from pathlib import Path

# APILAKE_ROOT: another checkout of the project (its template.yaml, sources, functions), e.g. a copy in a test.
ROOT = Path(os.environ.get("APILAKE_ROOT") or Path(__file__).resolve().parents[2]).resolve()
TEMPLATE = ROOT / "template.yaml"
LAYER = ROOT / "layers" / "common"
SOURCES = LAYER / "sources.yaml"  # the user's sources, shipped in the layer
FUNCTIONS = ROOT / "functions"
WORKER_APP = FUNCTIONS / "worker" / "app.py"
PLANNER_APP = FUNCTIONS / "planner" / "app.py"
EVENTS = ROOT / "events"
PLANNER_EVENT = EVENTS / "planner.json"
EXAMPLES = ROOT / "examples"
EXAMPLE_SOURCES = EXAMPLES / "sources.yaml"
EXAMPLE_VENDORS = EXAMPLES / "vendors.yaml"
