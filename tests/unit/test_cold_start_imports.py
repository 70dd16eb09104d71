"""The handlers' cold start: what importing each one loads, as Lambda would (an isolated interpreter that sees the
function's folder, the layer's code and the installed libraries). Not a timing (bench/cold_start.py times it): the
libraries that made the worker's import 2.6x a bare boto3 import, which must not come back (decisions 97 to 100)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the handlers do not need, and what each cost at import: Powertools' batch utility (its every event
# source's data classes, parser models and asyncio), pydantic-settings (asyncio, dotenv, its CLI and cloud
# sources) and jinja2 (the template generator's, shipped in the layer for the devtools only). tenacity stays: the
# design's retry library, a few milliseconds once the standard library it uses is loaded.
NOT_IMPORTED = (
    "asyncio",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.data_classes",
    "pydantic_settings",
    "jinja2",
)


def modules_after_import(function: str) -> set[str]:
    paths = [str(ROOT / "functions" / function), str(ROOT / "layers" / "common"), sysconfig.get_paths()["purelib"]]
    code = f"import json, sys; sys.path[:0] = {paths!r}; import app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"AWS_DEFAULT_REGION": "us-east-1"},
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("function", ["worker", "planner"])
def test_a_handler_s_import_loads_none_of_what_it_does_not_need(function: str) -> None:
    # Given a fresh isolated interpreter, When it imports the handler
    loaded = modules_after_import(function)
    # Then the handler and the layer's code are there (the check sees what Lambda would) and none of the others
    assert {"app", "apilake.ingest" if function == "worker" else "apilake.planner", "boto3", "pydantic"} <= loaded
    assert sorted(loaded & set(NOT_IMPORTED)) == []
