"""Sources as configuration: the models of the sources file and its loader.

One file (``sources.yaml``) declares every source. It is validated as a whole before anything
runs, and an error names the file, the source and the field::

    sources.yaml: source 'api-b': pagination.page_size: Input should be greater than or equal to 1
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

import hashlib
import pickle
import re
import zoneinfo
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.version import VERSION as PYDANTIC_VERSION

from apilake import __version__

# The auth models live in apilake.auth_config (importable from here too, as before).
from apilake.auth_config import ApiKeyAuth as ApiKeyAuth
from apilake.auth_config import Auth, NoAuth, auth_headers, is_loopback
from apilake.auth_config import BearerAuth as BearerAuth
from apilake.auth_config import HeadersFromSecretAuth as HeadersFromSecretAuth
from apilake.auth_config import HttpBasicAuth as HttpBasicAuth
from apilake.auth_config import OAuth2ClientCredentialsAuth as OAuth2ClientCredentialsAuth
from apilake.budget_config import Budget as Budget  # importable from here too, as before
from apilake.budget_config import BudgetGroup, BudgetGroupName, share_groups, unused_groups
from apilake.exceptions import ConfigError, field_error
from apilake.incremental import parse_value
from apilake.pagination_config import JsonPath, Pagination, ParamName, _Model, body_paths  # the models
from apilake.param_text import ParamValue
from apilake.parent_config import ParentConfig, check_child, check_parents
from apilake.request_body import JsonObject, Method, json_object, path_problem

if TYPE_CHECKING:
    from apilake.config_errors import Places

# At most 38 characters: the worker is named apilake-<stage>-worker-<source> (64 at most in Lambda).
SourceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,37}$")]


class NoSharding(_Model):
    type: Literal["none"]


class DailySharding(_Model):
    """One shard a day: the window [day, day + 1) goes to the vendor as two query parameters."""

    type: Literal["daily"]
    start_param: ParamName
    end_param: ParamName
    date_format: str = "%Y-%m-%d"
    lookback_days: int = Field(default=1, ge=1, le=366)


Sharding = Annotated[NoSharding | DailySharding, Field(discriminator="type")]


class Retries(_Model):
    max_attempts: int = Field(default=5, ge=1, le=20)
    base_delay_seconds: float = Field(default=0.5, gt=0, le=60)
    max_delay_seconds: float = Field(default=20.0, gt=0, le=900)
    # A Retry-After longer than this parks the message (visibility timeout) instead of sleeping.
    max_inline_wait_seconds: float = Field(default=15.0, ge=0, le=300)


class Timeouts(_Model):
    connect_seconds: float = Field(default=3.05, gt=0, le=60)
    read_seconds: float = Field(default=30.0, gt=0, le=600)


class Incremental(_Model):
    """Fetch only what changed since the last complete run: the vendor is asked for the records whose
    ``cursor_path`` is after a value (``param``). The high-water mark (the largest value landed) is kept per
    source in the ledger and moves only when a run of the source is complete (apilake.marks)."""

    cursor_path: Annotated[JsonPath, StringConstraints(min_length=1)]  # the field that moves forward
    param: ParamName  # the request parameter that asks for records after a value
    initial_value: str | int | float  # what the first run asks for (a timestamp text, or a number)
    format: Literal["timestamp", "number"] = "timestamp"
    # Asked for this much before the mark (seconds for timestamps, units for numbers): catches late writes.
    overlap: float = Field(default=0, ge=0, le=366 * 86_400)
    # How a timestamp is sent (strftime, UTC); numbers are sent as they are.
    param_format: Annotated[str, StringConstraints(min_length=2)] = "%Y-%m-%dT%H:%M:%SZ"
    end_param: ParamName | None = None  # the upper bound's parameter, for a manual run's explicit window

    @model_validator(mode="after")
    def _initial_value(self) -> Self:
        try:
            parse_value(self, self.initial_value)
        except ValueError as exc:
            raise field_error(self, "initial_value", str(exc)) from None
        return self


class WorkerFunction(_Model):
    """The source's worker Lambda and queue in template.yaml (``make template`` writes them).

    ``memory_mb`` and ``batch_size`` default to the stack's ``WorkerMemorySize`` and ``WorkerBatchSize``;
    the queue's visibility timeout is six times ``timeout_seconds``.
    """

    timeout_seconds: int = Field(default=300, ge=30, le=900)
    memory_mb: int | None = Field(default=None, ge=128, le=10_240)
    batch_size: int | None = Field(default=None, ge=1, le=10)
    max_receive_count: int = Field(default=8, ge=2, le=1000)


# EventBridge Scheduler's expressions (one-time ``at(...)`` aside): the shape is checked here, the values by
# the scheduler when the stack deploys. Cron: minutes hours day-of-month month day-of-week year.
# Patterns, compiled (and cached by re) when a schedule is validated: a Lambda reading the validated copy never is.
_RATE = r"rate\((?P<value>[0-9]+) (?P<unit>minutes?|hours?|days?)\)"
_CRON = r"cron\((?P<fields>[^()]*)\)"
_CRON_FIELDS = (
    ("minutes", r"[0-9*/,-]+"),
    ("hours", r"[0-9*/,-]+"),
    ("day-of-month", r"[0-9*?/,LW-]+"),
    ("month", r"[0-9A-Za-z*/,-]+"),
    ("day-of-week", r"[0-9A-Za-z*?/,L#-]+"),
    ("year", r"[0-9*/,-]+"),
)


def _scheduler_expression(value: str) -> str:
    """``value`` with single spaces, if it is a ``rate(...)`` or ``cron(...)`` expression; else ValueError."""
    value = " ".join(value.split())
    if rate := re.fullmatch(_RATE, value):
        number, unit = int(rate["value"]), rate["unit"]
        if number < 1 or (number == 1) == unit.endswith("s"):
            raise ValueError(
                f"rate: a positive number, the unit singular for 1 only (rate(1 hour), rate(6 hours)); got {value!r}"
            )
        return value
    if cron := re.fullmatch(_CRON, value):
        fields = cron["fields"].split()
        if len(fields) != len(_CRON_FIELDS):
            raise ValueError(
                f"cron takes six fields (minutes hours day-of-month month day-of-week year), "
                f"got {len(fields)} in {value!r}"
            )
        for field, (what, pattern) in zip(fields, _CRON_FIELDS, strict=True):
            if not re.fullmatch(pattern, field):
                raise ValueError(f"cron: {what} {field!r} is not valid in {value!r}")
        if (fields[2] == "?") == (fields[4] == "?"):
            raise ValueError(f"cron: one of day-of-month and day-of-week must be '?' (not both), in {value!r}")
        return f"cron({' '.join(fields)})"
    raise ValueError(
        f"must be cron(minutes hours day-of-month month day-of-week year) or rate(value unit), got {value!r}"
    )


class Schedule(_Model):
    """When the planner runs this source, if not with the stack's default schedule (``ScheduleExpression``).

    Sources with the same expression and time zone share one EventBridge Scheduler schedule (``make template``),
    each keeping its own ``complete_within_minutes``.
    """

    expression: str
    timezone: str = "UTC"
    # When a scheduled run of the source is expected to be over: the completeness check (apilake.completeness)
    # judges the run this long after the planner wrote it; unset, the stack's RunCompleteWithinMinutes.
    complete_within_minutes: int | None = Field(default=None, ge=5, le=2880)

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _scheduler_expression(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        # Judged by the tz database where there is one (``make template``, ``apilake sources validate``); Lambda's
        # runtime may have none (the layer ships no tzdata) and needs only the name: the scheduler applies the zone.
        try:
            zoneinfo.ZoneInfo(value)
        except zoneinfo.ZoneInfoNotFoundError:
            if zoneinfo.available_timezones():
                raise ValueError(
                    f"unknown IANA time zone {value!r} (e.g. UTC, Europe/Berlin, America/New_York)"
                ) from None
        except ValueError:
            raise ValueError(f"not an IANA time zone name: {value!r}") from None
        return value


class ColumnType(StrEnum):
    """A declared column's type (``columns:``); apilake.curated maps each to its Trino type."""

    STRING = "string"
    BIGINT = "bigint"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    JSON = "json"  # a nested object or array (or anything), kept as JSON text


COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
RESERVED_COLUMNS = frozenset({"ingestion_date"})  # the curated table's partition


def column_name(field: str) -> str:
    """The curated table's column of a top-level record field: its name lowercased."""
    return field.lower()


class Curated(_Model):
    """The curated table's settings (a source with ``columns`` only)."""

    recent_days: int = Field(default=7, ge=1, le=3650)  # the ``_recent`` view's days, up to today


class Source(_Model):
    # Defaults that are models are made with model_construct (as ``Budget()`` makes them, not validated): calling them
    # would build their validators at import, which the Lambdas never use (they read the validated copy).
    name: SourceName
    base_url: str
    path: str = ""
    params: dict[ParamName, ParamValue] = Field(default_factory=dict)  # scalars, sent as text (param_text)
    headers: dict[ParamName, ParamValue] = Field(default_factory=dict)
    # POST: each page's request carries a JSON body, the ``body`` template ({} if none) with the page's values
    # set in it when the pagination's placement is body (apilake.request_body); params stay in the query string.
    method: Method = "GET"
    body: JsonObject | None = None
    # Where a response that answers 200 reports its errors (GraphQL's "errors"): anything there fails the page.
    error_path: Annotated[JsonPath, StringConstraints(min_length=1)] | None = None
    records_path: JsonPath
    record_id_path: JsonPath | None = None
    incremental: Incremental | None = None  # None: every run fetches everything
    pagination: Pagination
    sharding: Sharding = NoSharding.model_construct(type="none")
    auth: Auth = NoAuth.model_construct(type="none")
    budget: Budget = Budget.model_construct()
    worker: WorkerFunction = WorkerFunction.model_construct()
    schedule: Schedule | None = None  # None: the stack's default schedule
    retries: Retries = Retries.model_construct()
    timeouts: Timeouts = Timeouts.model_construct()
    max_page_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    # The pinned schema: top-level record field -> type. None: raw only (no curated table, no drift check).
    columns: dict[str, ColumnType] | None = None
    curated: Curated = Curated.model_construct()
    # A child source: fetched once per record of its parent's pages, {placeholders} filled from them (parent_config)
    parent: ParentConfig | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"must use https (plain http is allowed for loopback hosts only), got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment: use params")
        return value.rstrip("/")

    @field_validator("body", mode="before")
    @classmethod
    def _body(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("method") == "GET":
            raise ValueError(
                "a request body goes with method: POST only: add method: POST, or put the values in params "
                "(the query string)"
            )
        return None if value is None else json_object(value)

    @field_validator("pagination")
    @classmethod
    def _placement(cls, value: Pagination, info: ValidationInfo) -> Pagination:
        if getattr(value, "placement", "query") != "body":
            return value
        if info.data.get("method", "POST") != "POST":  # absent: the method itself is wrong, and said so
            raise field_error(
                value,
                "placement",
                "'body' needs method: POST (the page's values go in the JSON body of a POST request): "
                "add method: POST, or use placement: query",
            )
        for name, path in body_paths(value).items():
            problem = path_problem(info.data.get("body") or {}, path)
            if problem is not None:
                raise field_error(value, name, f"{path!r}: {problem}")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        if "?" in value or "#" in value:
            raise ValueError("must not carry a query or fragment: use params")
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, ColumnType] | None) -> dict[str, ColumnType] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("declare at least one field, or leave columns out (raw only)")
        seen: dict[str, str] = {}
        for field in value:
            name = column_name(field)
            if not COLUMN_NAME.fullmatch(name):
                raise ValueError(
                    f"field {field!r}: its column name {name!r} (the field lowercased) must match [a-z_][a-z0-9_]*"
                )
            if name in RESERVED_COLUMNS:
                raise ValueError(f"field {field!r}: {name!r} is the curated table's partition column")
            if name in seen:
                raise ValueError(f"fields {seen[name]!r} and {field!r} are both column {name!r} (lowercased)")
            seen[name] = field
        return value

    @model_validator(mode="after")
    def _curated_needs_columns(self) -> Self:
        if "curated" in self.model_fields_set and self.columns is None:
            raise field_error(self, "curated", "a curated table needs columns; declare columns or drop curated")
        if self.columns is not None and self.record_id_path:
            # The _current view keeps one row per id of the curated table: the id must be one of its columns.
            head, nested = self.record_id_path.split(".")[0], "." in self.record_id_path
            if self.columns.get(head) not in ((ColumnType.JSON,) if nested else tuple(ColumnType)):
                kind = "as json (the id is nested in it)" if nested else ""
                raise field_error(self, "record_id_path", f"declare {head!r} in columns {kind}".strip())
        return self

    def column_names(self) -> dict[str, str]:
        """Each declared field -> its column name (empty without ``columns``)."""
        return {field: column_name(field) for field in self.columns or {}}

    @model_validator(mode="after")
    def _incremental_unsharded(self) -> Self:
        if self.incremental is not None and not isinstance(self.sharding, NoSharding):
            raise field_error(self, "incremental", "a source fetched by date shards cannot also be incremental")
        return self

    @model_validator(mode="after")
    def _headers_not_auths(self) -> Self:
        by_auth = {name.lower(): name for name in auth_headers(self.auth)}
        for name in self.headers:
            if name.lower() in by_auth:
                raise field_error(
                    self,
                    ("headers", name),
                    f"the header {by_auth[name.lower()]!r} is set by auth ({self.auth.type}): drop it from headers "
                    "(header names are case-insensitive)",
                )
        return self

    @model_validator(mode="after")
    def _parent(self) -> Self:
        check_child(self)
        return self

    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def origin(self) -> tuple[str, str]:
        """(scheme, host[:port]) every request of this source must go to."""
        parts = urlsplit(self.base_url)
        return parts.scheme, parts.netloc


class SourcesFile(_Model):
    version: Literal[1] = 1
    # Requests-per-second limits shared by sources (budget.group): one vendor's endpoints, one limit.
    budget_groups: dict[BudgetGroupName, BudgetGroup] = Field(default_factory=dict)
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise field_error(
                    self, ("sources", index, "name"), f"source '{source.name}' is declared more than once"
                )
            seen.add(source.name)
        return self

    @model_validator(mode="after")
    def _parents(self) -> Self:
        check_parents(self, self.sources)
        return self

    @model_validator(mode="after")
    def _budget_groups(self) -> Self:
        """Each grouped source's budget with its worker's share of the group (apilake.budget_config)."""
        budgets = share_groups(self.budget_groups, [source.budget for source in self.sources])
        for index, (source, budget) in enumerate(zip(self.sources, budgets, strict=True)):
            if budget is not source.budget:
                self.sources[index] = source.model_copy(update={"budget": budget})
        return self

    @property
    def unused_budget_groups(self) -> list[str]:
        return unused_groups(self.budget_groups, [source.budget for source in self.sources])

    @cached_property
    def by_name(self) -> dict[str, Source]:
        return {source.name: source for source in self.sources}

    def get(self, name: str) -> Source:
        try:
            return self.by_name[name]
        except KeyError:
            raise ConfigError(f"unknown source {name!r}; declared: {', '.join(self.by_name)}") from None

    def select(self, names: list[str] | None) -> list[Source]:
        """The sources named (all when ``names`` is None), in the file's order; unknown names are an error."""
        if names is None:
            return list(self.sources)
        for name in names:
            self.get(name)
        return [source for source in self.sources if source.name in names]


def parse_sources(raw: Any, origin: str, places: "Places | None" = None) -> SourcesFile:
    """Validate an already-parsed document; ``origin`` (the file name) prefixes every error, with the line and
    column of the problem when ``places`` (from :func:`apilake.config_errors.read_yaml`) says where nodes are."""
    from apilake.config_errors import validate  # with PyYAML: not for the Lambdas, which read the validated copy

    sources: SourcesFile = validate(SourcesFile, raw, origin, places)
    return sources


# The validated copy of a sources file: what :func:`load_sources` makes of it, pickled beside it with the key it was
# made under. The layer's build writes one for the layer's sources.yaml (layers/common/Makefile); each Lambda
# container reads it back instead of parsing the YAML and validating it again (docs/decisions.md).
VALIDATED_SUFFIX = ".validated.pickle"


def validated_copy_path(path: Path) -> Path:
    return path.with_name(path.name + VALIDATED_SUFFIX)


def _validated_key(data: bytes) -> bytes:
    """What a validated copy was made from: the file's bytes (their hash), apilake's and pydantic's versions."""
    digest = hashlib.sha256(data).hexdigest()
    return f"apilake sources {__version__} pydantic {PYDANTIC_VERSION} sha256 {digest}\n".encode()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sources file: {exc.strerror}") from exc


def _validate_file(path: Path, data: bytes) -> SourcesFile:
    from apilake.config_errors import read_yaml  # PyYAML, imported only to read YAML

    raw, places = read_yaml(data.decode("utf-8"), str(path))
    return parse_sources(raw, path.name, places)


def load_sources(path: str | Path, validated_copy: bool = False) -> SourcesFile:
    """Read and validate a sources file; ConfigError naming the file, line and column, source and field. With
    ``validated_copy`` (the Lambdas': a pickle is code, read only from their read-only layer), the copy beside it
    made from these very bytes by this apilake and pydantic, if there is one."""
    path = Path(path)
    data = _read(path)
    if validated_copy:
        key, copy_path = _validated_key(data), validated_copy_path(path)
        copy = copy_path.read_bytes() if copy_path.is_file() else b""
        if copy.startswith(key) and isinstance(sources := pickle.loads(copy[len(key) :]), SourcesFile):
            return sources
    return _validate_file(path, data)


def sources_from_bytes(path: str | Path, data: bytes) -> SourcesFile:
    """A sources file's ``data`` (read from ``path``, which its errors name) validated, as :func:`load_sources`."""
    return _validate_file(Path(path), data)


def write_validated_copy(path: str | Path) -> Path:
    """Validate a sources file (ConfigError as :func:`load_sources` says it) and write its validated copy beside it,
    for :func:`load_sources` to read back: the layer's build does, for the layer's sources.yaml. Returns its path."""
    path = Path(path)
    data = _read(path)
    target = validated_copy_path(path)
    target.write_bytes(_validated_key(data) + pickle.dumps(_validate_file(path, data), pickle.HIGHEST_PROTOCOL))
    return target
