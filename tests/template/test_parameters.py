"""The stack's parameters that reach a function's settings: the template accepts exactly what the settings do.

A value the template lets through but the settings refuse deploys fine and fails every invocation of the
function (``environment: APILAKE_...``); a value the settings accept but the template refuses is a limit
nobody meant. Which settings a function reads is taken from its handler (``XSettings.from_env()``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import StringConstraints, ValidationError
from pydantic.fields import FieldInfo

from apilake import settings as settings_module
from apilake.settings import ENV_PREFIX
from apilake_dev import paths
from apilake_dev.template.generate import parse_template
from tests.template.conftest import ROOT


@dataclass(frozen=True)
class Passed:
    """A parameter given to a function as an ``APILAKE_`` variable, and the settings class that reads it."""

    parameter: str
    variable: str
    settings: type[settings_module._Settings]

    @property
    def field_name(self) -> str:
        return self.variable.removeprefix(ENV_PREFIX).lower()

    @property
    def field(self) -> FieldInfo:
        # A variable no field reads would be dropped silently (the settings ignore unknown variables)
        assert self.field_name in self.settings.model_fields, f"{self.settings.__name__}: no {self.variable}"
        return self.settings.model_fields[self.field_name]

    def accepts(self, value: Any) -> bool:
        """Whether the settings take ``value`` for the variable as Lambda gives it (a string), other fields valid."""
        valid = {"lake_bucket": "lake", "stage": "dev", "source": "api-a", "queue_url": "https://queue"}
        try:
            self.settings.model_validate({**valid, self.field_name: str(value)})
        except ValidationError:
            return False
        return True

    def __str__(self) -> str:
        return f"{self.parameter}-{self.settings.__name__}"


def settings_read_by(code_uri: str) -> type[settings_module._Settings]:
    """The settings class the function's handler validates its environment with."""
    handler = (ROOT / code_uri / "app.py").read_text(encoding="utf-8")
    [name] = set(re.findall(r"\b(\w+Settings)\.from_env\(", handler))
    found: type[settings_module._Settings] = getattr(settings_module, name)
    return found


def passed_parameters(template: dict[str, Any]) -> list[Passed]:
    """Each (parameter, variable, settings class) of the functions' environments: a function's own variables,
    and those of Globals that its settings read (every function gets them all; each reads its own)."""
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    found: set[Passed] = set()
    for function in template["Resources"].values():
        if function["Type"] != "AWS::Serverless::Function":
            continue
        properties = function["Properties"]
        settings = settings_read_by(properties["CodeUri"])
        own = properties.get("Environment", {}).get("Variables", {})
        for variable, value in {**shared, **own}.items():
            reference = value.get("Ref") if isinstance(value, dict) else None
            if not variable.startswith(ENV_PREFIX) or reference not in template["Parameters"]:
                continue
            passed = Passed(str(reference), variable, settings)
            if variable in own or passed.field_name in settings.model_fields:
                found.add(passed)
    return sorted(found, key=str)


TEMPLATE = parse_template(paths.TEMPLATE.read_text(encoding="utf-8"))
PASSED = passed_parameters(TEMPLATE)


def bounds(field: FieldInfo) -> tuple[int | None, int | None]:
    """The smallest and largest whole number a field's ``Field(ge=..., le=...)`` (or gt/lt) lets through."""
    low = high = None
    for constraint in field.metadata:
        if isinstance(constraint, Ge):
            low = cast(int, constraint.ge)
        elif isinstance(constraint, Gt):
            low = cast(int, constraint.gt) + 1
        elif isinstance(constraint, Le):
            high = cast(int, constraint.le)
        elif isinstance(constraint, Lt):
            high = cast(int, constraint.lt) - 1
    return low, high


def test_the_parameters_that_reach_settings_are_found() -> None:
    # The discovery below finds the ones we know of (more may come; none may be lost)
    assert {(p.parameter, p.settings.__name__) for p in PASSED} >= {
        ("RunCompleteWithinMinutes", "CompletenessSettings"),
        ("LogLevel", "PlannerSettings"),
        ("LogLevel", "WorkerSettings"),
        ("LogLevel", "CompletenessSettings"),
        ("Stage", "PlannerSettings"),
        ("Stage", "CompletenessSettings"),
    }


@pytest.mark.parametrize("passed", PASSED, ids=str)
def test_the_template_accepts_what_the_settings_accept(passed: Passed) -> None:
    parameter = TEMPLATE["Parameters"][passed.parameter]
    field = passed.field
    # The parameter's default is a valid setting
    assert passed.accepts(parameter["Default"]), f"{passed.variable}: default {parameter['Default']!r} refused"
    if parameter["Type"] == "Number":
        # A number: the template's MinValue/MaxValue are the Field's bounds
        assert "AllowedValues" not in parameter
        template_range = (parameter.get("MinValue"), parameter.get("MaxValue"))
        assert template_range == bounds(field), f"{passed.parameter} {template_range} vs {passed.variable}"
        # And so the settings take the ends and refuse one past them
        low, high = template_range
        assert low is not None and high is not None
        assert passed.accepts(low) and passed.accepts(high)
        assert not passed.accepts(low - 1) and not passed.accepts(high + 1)
    elif "AllowedValues" in parameter:
        # A choice: every value the template offers is one the settings take
        refused = [v for v in parameter["AllowedValues"] if not passed.accepts(v)]
        assert not refused, f"{passed.parameter} allows {refused}, {passed.variable} refuses them"
    else:
        # A string: the template's pattern is the settings' pattern
        patterns = [c.pattern for c in field.metadata if isinstance(c, StringConstraints) and c.pattern]
        assert patterns == [parameter.get("AllowedPattern")], f"{passed.parameter} vs {passed.variable}"
