"""Environment settings of each function, validated inside the handler on every invoke."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from apilake.config import SourceName
from apilake.exceptions import ConfigError

NonEmpty = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # field name -> environment variable
    env_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, Any] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, variable in cls.env_names.items():
            if variable in environ:
                values[field] = environ[variable]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            lines = [
                f"environment variable {cls.env_names.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
                for err in exc.errors()
            ]
            raise ConfigError("\n".join(lines)) from exc


class WorkerSettings(_Settings):
    source: SourceName
    lake_bucket: NonEmpty
    queue_url: NonEmpty
    sources_file: NonEmpty = "/opt/python/sources.yaml"
    # Seconds kept back from the Lambda's remaining time: never start a wait or a request past it.
    safety_margin_seconds: float = Field(default=5.0, ge=0, le=120)
    # A continuation claimed but not confirmed for this long is taken as abandoned (its worker died)
    # and sent again: the worker's timeout (the template sets it), after which no worker holds it.
    continuation_stale_seconds: float = Field(default=300.0, gt=0, le=43_200)

    env_names = {
        "source": "APILAKE_SOURCE",
        "lake_bucket": "APILAKE_LAKE_BUCKET",
        "queue_url": "APILAKE_QUEUE_URL",
        "sources_file": "APILAKE_SOURCES_FILE",
        "safety_margin_seconds": "APILAKE_SAFETY_MARGIN_SECONDS",
        "continuation_stale_seconds": "APILAKE_CONTINUATION_STALE_SECONDS",
    }


class PlannerSettings(_Settings):
    lake_bucket: NonEmpty
    # JSON object: source name -> queue URL
    queue_urls: dict[SourceName, NonEmpty] = Field(min_length=1)
    sources_file: NonEmpty = "/opt/python/sources.yaml"
    send_threads: int = Field(default=8, ge=1, le=64)

    env_names = {
        "lake_bucket": "APILAKE_LAKE_BUCKET",
        "queue_urls": "APILAKE_QUEUE_URLS",
        "sources_file": "APILAKE_SOURCES_FILE",
        "send_threads": "APILAKE_SEND_THREADS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, Any] | None = None) -> Self:
        environ = dict(os.environ if environ is None else environ)
        raw = environ.get("APILAKE_QUEUE_URLS")
        if raw is not None:
            try:
                environ["APILAKE_QUEUE_URLS"] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable APILAKE_QUEUE_URLS: not a JSON object: {exc}") from exc
        return super().from_env(environ)
