"""Where things are in this repository: one place for every path the dev tools use.

The dev tools run from a checkout (``pip install -e .[dev]``); the operator commands never need these.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
