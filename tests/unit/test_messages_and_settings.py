"""Queue messages and environment settings are validated models with clear errors."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from apilake.exceptions import ConfigError
from apilake.messages import WorkItem
from apilake.settings import PlannerSettings, WorkerSettings

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


WORKER_ENV = {"APILAKE_SOURCE": "api-a", "APILAKE_LAKE_BUCKET": "lake", "APILAKE_QUEUE_URL": "https://q"}


def test_worker_settings_from_env() -> None:
    settings = WorkerSettings.from_env(WORKER_ENV)
    assert settings.source == "api-a" and settings.sources_file == "/opt/python/sources.yaml"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {k: v for k, v in WORKER_ENV.items() if k != "APILAKE_SOURCE"},
            "environment variable APILAKE_SOURCE: Field required",
        ),
        (
            {**WORKER_ENV, "APILAKE_LAKE_BUCKET": "  "},
            "environment variable APILAKE_LAKE_BUCKET: String should have at least 1",
        ),
        (
            {**WORKER_ENV, "APILAKE_SAFETY_MARGIN_SECONDS": "-1"},
            "APILAKE_SAFETY_MARGIN_SECONDS: Input should be greater",
        ),
    ],
)
def test_worker_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerSettings.from_env(env)


def test_planner_settings_read_queue_urls_as_json() -> None:
    settings = PlannerSettings.from_env(
        {"APILAKE_LAKE_BUCKET": "lake", "APILAKE_QUEUE_URLS": '{"api-a": "https://q/a"}'}
    )
    assert settings.queue_urls == {"api-a": "https://q/a"}


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("not json", "APILAKE_QUEUE_URLS: not a JSON object"),
        ("{}", "APILAKE_QUEUE_URLS: Dictionary should have at least 1 item"),
        ('{"API A": "x"}', "APILAKE_QUEUE_URLS"),
    ],
)
def test_planner_settings_errors_name_the_variable(urls: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlannerSettings.from_env({"APILAKE_LAKE_BUCKET": "lake", "APILAKE_QUEUE_URLS": urls})
