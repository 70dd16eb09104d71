"""The pacer spaces requests evenly; credentials come from Secrets Manager and never show."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.auth import Credentials, CredentialStore
from apilake.config import Source, parse_sources
from apilake.exceptions import ConfigError, PermanentError, RetryableError
from apilake.ratelimit import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_pacer_spaces_calls_one_interval_apart() -> None:
    clock = FakeClock()
    pacer = Pacer(4.0, clock=clock, sleep=clock.sleep)
    waits = [pacer.wait() for _ in range(5)]
    assert waits == [0.0, 0.25, 0.25, 0.25, 0.25]
    assert clock.now == pytest.approx(101.0)


def test_the_pacer_does_not_bank_idle_time_into_a_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 10
    assert [pacer.wait(), pacer.wait()] == [0.0, 0.5]


def source_with(auth: dict[str, Any]) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://x.example.com",
        "records_path": "",
        "pagination": {"type": "single"},
        "auth": auth,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


@mock_aws
@pytest.mark.parametrize(
    ("auth", "secret", "expected"),
    [
        ({"type": "api_key", "secret_name": "s"}, "k1", Credentials(headers={"X-Api-Key": "k1"})),
        (
            {"type": "api_key", "secret_name": "s", "location": "query", "name": "key"},
            "k2",
            Credentials(params={"key": "k2"}),
        ),
        ({"type": "bearer", "secret_name": "s"}, "t1", Credentials(headers={"Authorization": "Bearer t1"})),
        (
            {"type": "bearer", "secret_name": "s", "secret_field": "token"},
            json.dumps({"token": "t2"}),
            Credentials(headers={"Authorization": "Bearer t2"}),
        ),
        ({"type": "none"}, "unused", Credentials()),
    ],
)
def test_credentials_are_read_by_secret_name(auth: dict[str, Any], secret: str, expected: Credentials) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="s", SecretString=secret)
    assert CredentialStore(client).for_source(source_with(auth)).current() == expected


@mock_aws
def test_a_secret_without_the_named_field_is_a_config_error_that_does_not_show_it() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="s", SecretString=json.dumps({"other": "hunter2"}))
    with pytest.raises(ConfigError) as raised:
        CredentialStore(client).for_source(
            source_with({"type": "bearer", "secret_name": "s", "secret_field": "token"})
        ).current()
    assert "no string field 'token'" in str(raised.value) and "hunter2" not in str(raised.value)


def test_credentials_do_not_show_in_repr_and_are_redacted_or_stripped_from_urls() -> None:
    credentials = Credentials(headers={"Authorization": "Bearer t0p"}, params={"key": "s3cr3t"})
    assert "t0p" not in repr(credentials) and "s3cr3t" not in repr(credentials)
    url = "https://x.example.com/a?page=2&key=s3cr3t"
    assert credentials.redact(url) == "https://x.example.com/a?page=2&key=***"
    assert credentials.strip(url) == "https://x.example.com/a?page=2"


@mock_aws
@pytest.mark.parametrize("stored", ["k3y\n", "k3y\r\n", "  k3y\t", "\nk3y \n"], ids=["\\n", "\\r\\n", "blanks", "both"])
@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "api_key", "secret_name": "s"}, Credentials(headers={"X-Api-Key": "k3y"})),
        ({"type": "bearer", "secret_name": "s"}, Credentials(headers={"Authorization": "Bearer k3y"})),
        (
            {"type": "bearer", "secret_name": "s", "secret_field": "token"},
            Credentials(headers={"Authorization": "Bearer k3y"}),
        ),
    ],
    ids=["key", "bearer", "bearer, JSON field"],
)
def test_whitespace_around_a_secret_is_stripped(stored: str, auth: dict[str, Any], expected: Credentials) -> None:
    # Given a secret made from a file (``--secret-string file://key.txt`` keeps its last newline)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="s", SecretString=json.dumps({"token": stored}) if "secret_field" in auth else stored)
    # Then the credentials carry the key alone: http.client would refuse a header ending with a newline
    assert CredentialStore(client).for_source(source_with(auth)).current() == expected


@mock_aws
@pytest.mark.parametrize("stored", ["k3y\nd0", "k3y\x00d0", "k3y\x7fd0", "k3y\x85d0", "k3y\rX-Other: d0"])
@pytest.mark.parametrize("secret_field", [None, "token"])
def test_a_secret_with_a_control_character_is_refused_without_showing_it(stored: str, secret_field: str | None) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="s", SecretString=json.dumps({"token": stored}) if secret_field else stored)
    auth = {"type": "bearer", "secret_name": "s", "secret_field": secret_field}
    with pytest.raises(ConfigError) as raised:
        CredentialStore(client).for_source(source_with(auth)).current()
    # A permanent error (the worker fails the page with this reason), naming the source and the secret only
    assert isinstance(raised.value, PermanentError)
    assert str(raised.value) == "source 'api-x': secret 's' has a control character in its value"
    assert "k3y" not in repr(raised.value) and raised.value.__cause__ is None and raised.value.__context__ is None


@mock_aws
def test_a_secret_that_cannot_be_read_is_a_retryable_error_naming_it() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    with pytest.raises(RetryableError, match=r"source 'api-x': could not read secret 's': .*ResourceNotFound"):
        CredentialStore(client).for_source(source_with({"type": "bearer", "secret_name": "s"})).current()
