"""The handlers' cold start: what importing each one loads, as Lambda would (an isolated interpreter that sees the
function's folder, the layer's code and the installed libraries). Not a timing (bench/cold_start.py times it): the
libraries that made the worker's import 2.6x a bare boto3 import, which must not come back (decisions 97 to 100),
and what the worker does without since issue 16 (PyYAML and the sources file's validation, the ledger's status
models, OAuth2, the drift report, pydantic's plugin search)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from apilake.config import write_validated_copy
from apilake_dev import paths as project

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
# And what the worker does not need either: PyYAML and the sources file's error reporting (it reads the validated
# copy), the ledger's status models (it writes the ledger, reads no status), OAuth2 (its sources' auth is not),
# the drift report and the run summary (it notes the fields' kinds only), difflib (did-you-mean hints).
NOT_IMPORTED_BY_THE_WORKER = (
    "yaml",
    "apilake.config_errors",
    "apilake.ledger_models",
    "apilake.oauth2",
    "apilake.drift",
    "apilake.run_summary",
    "difflib",
)


def run_isolated(function: str, statements: str) -> list[str]:
    """The lines ``statements`` print after ``import app``, in an isolated interpreter as Lambda would run it."""
    paths = [str(ROOT / "functions" / function), str(ROOT / "layers" / "common"), sysconfig.get_paths()["purelib"]]
    code = f"import json, sys; sys.path[:0] = {paths!r}; import app\n{statements}"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"AWS_DEFAULT_REGION": "us-east-1"},
    )
    return out.stdout.splitlines()


def modules_after_import(function: str) -> set[str]:
    return set(json.loads(run_isolated(function, "print(json.dumps(sorted(sys.modules)))")[0]))


@pytest.mark.parametrize("function", ["worker", "planner"])
def test_a_handler_s_import_loads_none_of_what_it_does_not_need(function: str) -> None:
    # Given a fresh isolated interpreter, When it imports the handler
    loaded = modules_after_import(function)
    # Then the handler and the layer's code are there (the check sees what Lambda would) and none of the others
    assert {"app", "apilake.ingest" if function == "worker" else "apilake.planner", "boto3", "pydantic"} <= loaded
    assert sorted(loaded & set(NOT_IMPORTED)) == []


def test_the_worker_reads_its_sources_without_yaml_or_validating_them(tmp_path: Path) -> None:
    # Given the layer's sources file with the validated copy its build writes beside it
    sources = tmp_path / "sources.yaml"
    shutil.copyfile(project.SOURCES, sources)
    write_validated_copy(sources)
    # When the worker's handler is imported and loads the sources, as its first invoke does
    lines = run_isolated(
        "worker",
        f"from apilake.aws import cached_sources; cached_sources({str(sources)!r})\n"
        "print(json.dumps(sorted(sys.modules)))",
    )
    # Then none of what it does not need was imported
    assert sorted(set(json.loads(lines[0])) & set(NOT_IMPORTED_BY_THE_WORKER)) == []


@pytest.mark.parametrize("function", ["worker", "planner"])
def test_a_handler_does_not_search_the_installed_distributions_for_pydantic_plugins(function: str) -> None:
    # Given a fresh isolated interpreter, When it imports the handler (which builds pydantic models)
    lines = run_isolated(function, "from pydantic.plugin import _loader; print(_loader._plugins is None)")
    # Then pydantic never looked for plugins (the layer ships none): its search ran, it would have kept what it found
    assert lines == ["True"]


@pytest.mark.parametrize("function", ["worker", "planner", "completeness"])
def test_a_handlers_imports_are_frozen_after_them_and_the_collector_is_on_again(function: str) -> None:
    # Given a fresh interpreter, as Lambda's
    # When the handler's module is imported
    enabled, frozen = json.loads(
        run_isolated(function, "import gc; print(json.dumps([gc.isenabled(), gc.get_freeze_count()]))")[-1]
    )
    # Then what it imported is frozen (left out of later collections; none ran while it imported: the collector
    # was off), and the collector is on again: decision 127
    assert enabled and frozen > 10_000
