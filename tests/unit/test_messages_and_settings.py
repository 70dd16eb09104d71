"""Queue messages and environment settings are validated models with clear errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from apilake.aws import AwsClients, default_clients, default_queue_locator
from apilake.exceptions import ConfigError, describe_validation_error
from apilake.messages import Parking, WorkItem
from apilake.queue import encode
from apilake.settings import CompletenessSettings, PlannerSettings, WorkerSettings

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "run_id": "sched-20261126T010000Z",
    "source": "api-a",
    "ingestion_date": "2026-11-26",
    "shard": "2026-11-25",
    "page": 3,
}


def test_a_good_message_parses() -> None:
    item = WorkItem.model_validate(GOOD)
    assert item.page == 3 and item.ingestion_date == date(2026, 11, 26)
    assert item.next("c").page == 4 and item.next("c").cursor == "c"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": 100_000}, "page"),
        ({"source": "../api-a"}, "source"),
        ({"source": "api/a"}, "source"),
        ({"shard": "../../x"}, "shard"),
        ({"shard": "2026%2F11"}, "shard"),
        ({"run_id": "r/1"}, "run_id"),
        ({"run_id": "..%2F"}, "run_id"),
        ({"ingestion_date": "yesterday"}, "ingestion_date"),
        ({"cursor": "x" * 5000}, "cursor"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WorkItem.model_validate({**GOOD, **change})
    assert field in {str(err["loc"][0]) for err in raised.value.errors()}


PARK = {"count": 2, "since": "2026-11-26T01:00:00Z", "until": "2026-11-26T03:00:00Z"}


def test_a_message_written_before_parking_existed_parses_and_an_unparked_one_is_sent_as_before() -> None:
    # Given a message of schema version 1 without the park field, as the planner wrote it before
    item = WorkItem.model_validate_json(json.dumps(GOOD))
    # Then it parses unparked, and an unparked item travels without the field (old workers read it)
    assert item.park is None
    assert json.loads(encode(item)) == {**GOOD, "cursor": None}


def test_a_parked_message_travels_with_its_park_and_its_next_page_is_not_parked() -> None:
    item = WorkItem.model_validate({**GOOD, "park": PARK})
    assert item.park == Parking(
        count=2, since=datetime(2026, 11, 26, 1, tzinfo=UTC), until=datetime(2026, 11, 26, 3, tzinfo=UTC)
    )
    assert WorkItem.model_validate_json(encode(item)) == item
    assert item.next("c").park is None


def test_parking_again_counts_the_park_and_keeps_when_the_first_one_began() -> None:
    first, second = datetime(2026, 11, 26, 1, tzinfo=UTC), datetime(2026, 11, 26, 1, 15, tzinfo=UTC)
    once = WorkItem.model_validate(GOOD).parked(second, first)
    twice = once.parked(datetime(2026, 11, 26, 2, tzinfo=UTC), second)
    assert once.park == Parking(count=1, since=first, until=second)
    assert twice.park == Parking(count=2, since=first, until=datetime(2026, 11, 26, 2, tzinfo=UTC))
    assert twice.model_copy(update={"park": None}) == WorkItem.model_validate(GOOD)


@pytest.mark.parametrize(
    "park",
    [
        {**PARK, "count": 0},
        {**PARK, "since": "2026-11-26T01:00:00"},  # no time zone
        {**PARK, "until": "later"},
        {**PARK, "extra": 1},
        {"count": 1},
    ],
)
def test_bad_parks_are_refused_naming_the_field(park: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        WorkItem.model_validate({**GOOD, "park": park})
    assert {str(err["loc"][0]) for err in raised.value.errors()} == {"park"}


WORKER_ENV = {"APILAKE_SOURCE": "api-a", "APILAKE_LAKE_BUCKET": "lake", "APILAKE_QUEUE_URL": "https://q"}
PLANNER_ENV = {"APILAKE_STAGE": "dev", "APILAKE_LAKE_BUCKET": "lake"}
COMPLETENESS_ENV = {"APILAKE_STAGE": "dev", "APILAKE_LAKE_BUCKET": "lake"}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Replace the process's APILAKE_* variables (the settings read os.environ, as in Lambda)."""

    def use(env: dict[str, str]) -> None:
        for name in [name for name in os.environ if name.startswith("APILAKE_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return use


def test_worker_settings_from_env(environ: Callable[[dict[str, str]], None]) -> None:
    environ({**WORKER_ENV, "APILAKE_SAFETY_MARGIN_SECONDS": "2.5", "APILAKE_LOG_LEVEL": "DEBUG"})
    settings = WorkerSettings.from_env()
    assert settings.source == "api-a" and settings.sources_file == "/opt/python/sources.yaml"
    assert settings.safety_margin_seconds == 2.5 and settings.log_level == "DEBUG"


def test_planner_settings_from_env(environ: Callable[[dict[str, str]], None]) -> None:
    # Variables meant for the other function (the template's Globals) are not an error.
    environ({**PLANNER_ENV, "APILAKE_SEND_THREADS": "4", "APILAKE_SOURCE": "api-a"})
    settings = PlannerSettings.from_env()
    assert settings.stage == "dev" and settings.send_threads == 4 and settings.log_level == "INFO"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {k: v for k, v in WORKER_ENV.items() if k != "APILAKE_SOURCE"},
            "environment: APILAKE_SOURCE: Field required",
        ),
        (
            {**WORKER_ENV, "APILAKE_LAKE_BUCKET": "  "},
            "environment: APILAKE_LAKE_BUCKET: String should have at least 1 character",
        ),
        (
            {**WORKER_ENV, "APILAKE_SAFETY_MARGIN_SECONDS": "-1"},
            "environment: APILAKE_SAFETY_MARGIN_SECONDS: Input should be greater than or equal to 0",
        ),
        (
            {**WORKER_ENV, "APILAKE_CONTINUATION_STALE_SECONDS": "0"},
            "environment: APILAKE_CONTINUATION_STALE_SECONDS: Input should be greater than 0",
        ),
        ({**WORKER_ENV, "APILAKE_SOURCE": "API A"}, "environment: APILAKE_SOURCE: String should match pattern"),
        ({**WORKER_ENV, "APILAKE_LOG_LEVEL": "LOUD"}, "environment: APILAKE_LOG_LEVEL: Input should be 'DEBUG'"),
    ],
)
def test_worker_settings_errors_name_the_variable(
    environ: Callable[[dict[str, str]], None], env: dict[str, str], message: str
) -> None:
    environ(env)
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_env()
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APILAKE_LAKE_BUCKET": "lake"}, "environment: APILAKE_STAGE: Field required"),
        ({**PLANNER_ENV, "APILAKE_STAGE": "Dev-1"}, "environment: APILAKE_STAGE: String should match pattern"),
        ({**PLANNER_ENV, "APILAKE_SEND_THREADS": "0"}, "environment: APILAKE_SEND_THREADS: Input should be greater"),
        ({**PLANNER_ENV, "APILAKE_SEND_THREADS": "many"}, "environment: APILAKE_SEND_THREADS: Input should be a valid"),
    ],
)
def test_planner_settings_errors_name_the_variable(
    environ: Callable[[dict[str, str]], None], env: dict[str, str], message: str
) -> None:
    environ(env)
    with pytest.raises(ConfigError) as raised:
        PlannerSettings.from_env()
    assert message in str(raised.value)


def test_completeness_settings_from_env(environ: Callable[[dict[str, str]], None]) -> None:
    environ({**COMPLETENESS_ENV, "APILAKE_COMPLETE_WITHIN_MINUTES": "90", "APILAKE_SEND_THREADS": "4"})
    settings = CompletenessSettings.from_env()
    assert (settings.stage, settings.lake_bucket, settings.complete_within_minutes) == ("dev", "lake", 90)


def test_a_run_is_judged_six_hours_after_it_was_planned_unless_told(environ: Callable[[dict[str, str]], None]) -> None:
    environ(COMPLETENESS_ENV)
    assert CompletenessSettings.from_env().complete_within_minutes == 360


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APILAKE_LAKE_BUCKET": "lake"}, "environment: APILAKE_STAGE: Field required"),
        ({"APILAKE_STAGE": "dev"}, "environment: APILAKE_LAKE_BUCKET: Field required"),
        (
            {**COMPLETENESS_ENV, "APILAKE_COMPLETE_WITHIN_MINUTES": "4"},
            "environment: APILAKE_COMPLETE_WITHIN_MINUTES: Input should be greater than or equal to 5",
        ),
        (
            {**COMPLETENESS_ENV, "APILAKE_COMPLETE_WITHIN_MINUTES": "2881"},
            "environment: APILAKE_COMPLETE_WITHIN_MINUTES: Input should be less than or equal to 2880",
        ),
        (
            {**COMPLETENESS_ENV, "APILAKE_COMPLETE_WITHIN_MINUTES": "6h"},
            "environment: APILAKE_COMPLETE_WITHIN_MINUTES: Input should be a valid integer",
        ),
    ],
)
def test_completeness_settings_errors_name_the_variable(
    environ: Callable[[dict[str, str]], None], env: dict[str, str], message: str
) -> None:
    environ(env)
    with pytest.raises(ConfigError) as raised:
        CompletenessSettings.from_env()
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://host.docker.internal:5000 ", "http://host.docker.internal:5000"),
        ("https://s3.eu-west-1.amazonaws.com", "https://s3.eu-west-1.amazonaws.com"),
    ],
    ids=["unset", "empty (the template's value)", "blank", "moto's server", "the host from a container", "https"],
)
@pytest.mark.parametrize("settings", [PlannerSettings, WorkerSettings, CompletenessSettings])
def test_every_function_reads_the_aws_endpoint_empty_meaning_aws(
    environ: Callable[[dict[str, str]], None],
    settings: type[PlannerSettings | WorkerSettings | CompletenessSettings],
    value: str | None,
    expected: str | None,
) -> None:
    environ({**WORKER_ENV, **PLANNER_ENV} | ({} if value is None else {"APILAKE_AWS_ENDPOINT_URL": value}))
    assert settings.from_env().aws_endpoint_url == expected


@pytest.mark.parametrize(
    "value", ["127.0.0.1:5000", "ftp://127.0.0.1", "http://", "localhost"], ids=["no scheme", "ftp", "no host", "bare"]
)
def test_an_aws_endpoint_that_is_no_http_url_is_refused_naming_the_variable(
    environ: Callable[[dict[str, str]], None], value: str
) -> None:
    environ({**PLANNER_ENV, "APILAKE_AWS_ENDPOINT_URL": value})
    with pytest.raises(ConfigError) as raised:
        PlannerSettings.from_env()
    assert "environment: APILAKE_AWS_ENDPOINT_URL: Value error, must be an http(s) URL" in str(raised.value)


def test_the_clients_go_to_the_endpoint_given_and_are_built_once_per_endpoint() -> None:
    # Given no endpoint (AWS) and a local one
    aws, local = default_clients(), default_clients("http://127.0.0.1:5000")
    # Then each client of the local set goes there, the AWS set to AWS, and each set is made once per container
    assert {c.meta.endpoint_url for c in (local.s3, local.sqs, local.secrets)} == {"http://127.0.0.1:5000"}
    assert "amazonaws.com" in aws.s3.meta.endpoint_url and "amazonaws.com" in aws.secrets.meta.endpoint_url
    assert default_clients("http://127.0.0.1:5000") is local and default_clients() is aws
    assert default_clients(None) is aws and default_clients(endpoint_url=None) is aws
    # And the queue locator asks the endpoint's SQS (the planner's and the worker's clients: integration tests)
    assert default_queue_locator("dev", "http://127.0.0.1:5000")._sqs is local.sqs
    assert default_queue_locator("dev")._sqs is aws.sqs
    assert AwsClients.create(endpoint_url="http://localhost:4566").sqs.meta.endpoint_url == "http://localhost:4566"


def test_every_wrong_variable_is_named_at_once(environ: Callable[[dict[str, str]], None]) -> None:
    environ({"APILAKE_LAKE_BUCKET": "", "APILAKE_SEND_THREADS": "0"})
    with pytest.raises(ConfigError) as raised:
        PlannerSettings.from_env()
    assert [line.split(":")[1].strip() for line in str(raised.value).splitlines()] == [
        "APILAKE_LAKE_BUCKET",
        "APILAKE_STAGE",
        "APILAKE_SEND_THREADS",
    ]


def test_a_validation_error_reads_origin_location_message_one_problem_a_line() -> None:
    with pytest.raises(ValidationError) as raised:
        WorkItem.model_validate({**GOOD, "page": 0, "cursor": 5})
    assert describe_validation_error("queue message", raised.value).splitlines() == [
        "queue message: page: Input should be greater than or equal to 1",
        "queue message: cursor: Input should be a valid string",
    ]
    with pytest.raises(ValidationError) as raised:
        WorkItem.model_validate([1])
    assert describe_validation_error("queue message", raised.value, whole="(message)") == (
        "queue message: (message): Input should be a valid dictionary or instance of WorkItem"
    )
