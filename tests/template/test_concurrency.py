"""Reserved concurrency only under its condition, and what `sam local invoke --env-vars` may override."""

from __future__ import annotations

from typing import Any

import pytest

from apilake.config import SourcesFile
from apilake.names import logical_id
from tests.template.test_operating import NO_VALUE
from tests.template.test_template import by_type
from tests.template.test_tools import translated_template


def test_every_function_reserves_concurrency_only_under_the_condition(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    parameter = template["Parameters"]["ReservedConcurrency"]
    assert parameter["Default"] == "true" and parameter["AllowedValues"] == ["true", "false"]
    assert template["Conditions"]["ReserveConcurrency"] == {"Fn::Equals": [{"Ref": "ReservedConcurrency"}, "true"]}
    for name, function in by_type(resources, "AWS::Serverless::Function").items():
        reserved = function["Properties"]["ReservedConcurrentExecutions"]
        condition, _, otherwise = reserved["Fn::If"]
        assert (condition, otherwise) == ("ReserveConcurrency", NO_VALUE), name


def resolve_if(value: Any, condition: str, holds: bool) -> Any:
    """``value`` with ``Fn::If [condition, a, b]`` resolved; ``None`` for ``AWS::NoValue`` (the key is dropped)."""
    if isinstance(value, dict) and "Fn::If" in value:
        name, yes, no = value["Fn::If"]
        assert name == condition
        chosen = yes if holds else no
        return None if chosen == NO_VALUE else chosen
    return value


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template()


@pytest.mark.slow
@pytest.mark.parametrize("reserved", ["true", "false"])
def test_reserved_concurrency_through_the_translated_template(
    translated: dict[str, Any], sources: SourcesFile, reserved: str
) -> None:
    # Given the template as CloudFormation receives it (SAM's transform done) and the parameter's value
    condition = translated["Conditions"]["ReserveConcurrency"]["Fn::Equals"]
    holds = condition == [{"Ref": "ReservedConcurrency"}, "true"] and reserved == "true"
    functions = by_type(translated["Resources"], "AWS::Lambda::Function")
    # Then every function reserves what it needs when the parameter is 'true', none when it is 'false'
    expected = {
        "Planner": 1,
        "Completeness": 1,
        **{logical_id(s.name, "Worker"): s.budget.max_concurrency for s in sources.sources},
    }
    assert set(functions) == set(expected)
    found = {
        name: resolve_if(f["Properties"].get("ReservedConcurrentExecutions"), "ReserveConcurrency", holds)
        for name, f in functions.items()
    }
    assert found == (expected if holds else dict.fromkeys(expected))
    # And each source's event source mapping caps its workers either way
    mappings = by_type(translated["Resources"], "AWS::Lambda::EventSourceMapping").values()
    caps = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"]["ScalingConfig"]["MaximumConcurrency"] for m in mappings
    }
    assert caps == {logical_id(s.name, "Worker"): s.budget.max_concurrency for s in sources.sources}


def test_sam_local_may_point_the_functions_at_an_emulator(template: dict[str, Any]) -> None:
    # SAM CLI's --env-vars overrides only the variables the template declares: the endpoint is declared, empty
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["APILAKE_AWS_ENDPOINT_URL"] == ""
