"""Environment settings of each function, validated inside the handler on every invoke.

Every variable is ``APILAKE_`` followed by the field's name in capitals (``lake_bucket`` is
``APILAKE_LAKE_BUCKET``); a mapping is given as JSON; an error names the variable::

    environment: APILAKE_LAKE_BUCKET: String should have at least 1 character

Plain pydantic models read from ``os.environ`` by :meth:`_Settings.from_env`, not pydantic-settings'
``BaseSettings``: it imports asyncio, dotenv and its CLI and cloud sources (a tenth of the worker's cold
start) for what this module does in a loop. Decision 98 in docs/decisions.md.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from apilake.config import SourceName
from apilake.exceptions import ConfigError, Location, describe_validation_error

ENV_PREFIX = "APILAKE_"

NonEmpty = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
# The template's Stage parameter (part of every resource name, the queues' among them).
Stage = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{1,9}$")]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class _Settings(BaseModel):
    # extra="ignore": both functions share variables (the template's Globals) that only one reads. defer_build: each
    # function builds the one class it reads, at its first invoke (decision 100).
    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True, defer_build=True)

    lake_bucket: NonEmpty
    sources_file: NonEmpty = "/opt/python/sources.yaml"
    log_level: LogLevel = "INFO"
    # Where the AWS clients send their requests instead of AWS's own endpoints: the local stand-in (moto's
    # server) under `sam local invoke --env-vars`. Empty (the template's value) or unset: AWS.
    aws_endpoint_url: str | None = None

    @field_validator("aws_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:5000, or empty; got {value!r}")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from ``environ`` (``os.environ``); :class:`ConfigError` naming each variable that is wrong."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            variable = cls.variable((name,))
            if variable not in environ:
                continue
            values[name] = environ[variable]
            if get_origin(field.annotation) is dict:
                try:
                    values[name] = json.loads(environ[variable])
                except ValueError as exc:
                    raise ConfigError(f"environment: {variable}: not JSON ({exc})") from exc
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error("environment", exc, locate=cls.variable)) from exc

    @staticmethod
    def variable(loc: Location) -> str:
        """The environment variable of an error's location: ``("lake_bucket",)`` -> ``APILAKE_LAKE_BUCKET``."""
        return ENV_PREFIX + str(loc[0]).upper() if loc else ""


class WorkerSettings(_Settings):
    source: SourceName
    queue_url: NonEmpty
    # Seconds kept back from the Lambda's remaining time: never start a wait or a request past it.
    safety_margin_seconds: float = Field(default=5.0, ge=0, le=120)
    # A continuation claimed but not confirmed for this long is taken as abandoned (its worker died)
    # and sent again: the worker's timeout (the template sets it), after which no worker holds it.
    continuation_stale_seconds: float = Field(default=300.0, gt=0, le=43_200)
    # A parent source's worker: each child source -> its queue's URL (JSON; the template's !Sub of the child's
    # queue), where the work its landed pages announce is sent (apilake.children). Empty: no children.
    child_queue_urls: dict[SourceName, NonEmpty] = Field(default_factory=dict)


class PlannerSettings(_Settings):
    # The planner finds each source's queue by name: apilake.names.queue_name(stage, source).
    stage: Stage
    send_threads: int = Field(default=8, ge=1, le=64)


class CompletenessSettings(_Settings):
    # The check finds each source's dead-letter queue by name: apilake.names.dlq_name(stage, source).
    stage: Stage
    # A scheduled run is judged this long after the planner wrote it, for sources whose schedule does not say
    # otherwise (schedule.complete_within_minutes); the template's RunCompleteWithinMinutes.
    complete_within_minutes: int = Field(default=360, ge=5, le=2880)
    # The curated step (apilake.curation): Athena's workgroup (its scan cutoff bounds each query) and the Glue
    # database of the curated tables and views; the template's AthenaWorkGroup and GlueDatabase. Unset: no curated
    # step (a stack without them, a local invoke: the local flow curates with DuckDB).
    athena_workgroup: NonEmpty | None = None
    glue_database: NonEmpty | None = None
