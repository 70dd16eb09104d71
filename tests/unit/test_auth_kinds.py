"""http_basic, headers_from_secret and oauth2_client_credentials as the credentials of each attempt; the 401
that renews an OAuth2 token once (and only once); secrets given as values (``apilake sources try``)."""

from __future__ import annotations

import base64
import json
import traceback
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from apilake.auth import Credentials, CredentialStore
from apilake.config import Source, parse_sources
from apilake.exceptions import CredentialsError, PermanentHttpError, RetryableError
from apilake.http import Deadline, VendorClient
from apilake.pagination import PageRequest
from tests.unit.test_http import StubSession, response

SECRET = "cl13nt-s3cr3t-9f2e"
TOKEN_URL = "https://auth.example.com/oauth/token"
OAUTH2 = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "secret_name": "s"}
REQUEST = PageRequest("https://api.example.com/things", {"page": "1"})


def source_with(auth: dict[str, Any], max_attempts: int = 3) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/things",
        "records_path": "data",
        "pagination": {"type": "single"},
        "auth": auth,
        "retries": {"max_attempts": max_attempts, "base_delay_seconds": 0.01},
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("auth", "secret", "expected"),
    [
        (
            {"type": "http_basic", "secret_name": "s"},
            {"username": "ann", "password": "pw ü"},
            Credentials(headers={"Authorization": basic("ann", "pw ü")}),
        ),
        (
            {"type": "http_basic", "secret_name": "s", "username_field": "key"},
            {"key": "sk_test_4eC39", "password": ""},
            Credentials(headers={"Authorization": basic("sk_test_4eC39", "")}),
        ),
        (
            {"type": "headers_from_secret", "secret_name": "s", "headers": {"X-Account": "account", "X-Key": "key"}},
            {"account": "acc-1", "key": "k3y\n", "unused": "x"},
            Credentials(headers={"X-Account": "acc-1", "X-Key": "k3y"}),
        ),
    ],
    ids=["basic", "basic, Stripe: the key as username, an empty password", "two headers"],
)
def test_basic_and_headers_come_from_fields_of_one_json_secret(
    auth: dict[str, Any], secret: dict[str, str], expected: Credentials
) -> None:
    store = CredentialStore.from_values({"s": json.dumps(secret)})
    assert store.for_source(source_with(auth)).current() == expected


@pytest.mark.parametrize(
    ("auth", "secret", "message"),
    [
        ({"type": "http_basic", "secret_name": "s"}, "hunter2", "secret 's' is not a JSON object"),
        ({"type": "http_basic", "secret_name": "s"}, {"username": "ann"}, "secret 's' has no string field 'password'"),
        (
            {"type": "http_basic", "secret_name": "s"},
            {"username": "", "password": "hunter2"},
            "secret 's' has no string field 'username'",
        ),
        (
            {"type": "http_basic", "secret_name": "s"},
            {"username": "a:b", "password": "hunter2"},
            "secret 's': field 'username' has a colon, which HTTP basic cannot carry in a username",
        ),
        (
            {"type": "http_basic", "secret_name": "s"},
            {"username": "ann", "password": "hunter2\r\nX: 1"},
            "secret 's' has a control character in its value",
        ),
        (
            {"type": "headers_from_secret", "secret_name": "s", "headers": {"X-A": "a", "X-B": "b"}},
            {"a": "hunter2"},
            "secret 's' has no string field 'b'",
        ),
        (OAUTH2, {"client_id": "id", "secret": "hunter2"}, "secret 's' has no string field 'client_secret'"),
        ({"type": "bearer", "secret_name": "other"}, {}, "secret 'other' was not given"),
    ],
    ids=["not json", "no password", "empty username", "colon", "control", "missing header field", "oauth2", "absent"],
)
def test_an_unusable_secret_is_a_credentials_error_that_does_not_show_it(
    auth: dict[str, Any], secret: Any, message: str
) -> None:
    store = CredentialStore.from_values({"s": secret if isinstance(secret, str) else json.dumps(secret)})
    with pytest.raises(CredentialsError) as raised:
        store.for_source(source_with(auth)).current()
    assert str(raised.value) == f"source 'api-x': {message}"
    assert "hunter2" not in "".join(traceback.format_exception(raised.value))


@mock_aws
def test_secrets_manager_serves_the_new_kinds_too() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="s", SecretString=json.dumps({"username": "ann", "password": "pw"}))
    credentials = CredentialStore(client).for_source(source_with({"type": "http_basic", "secret_name": "s"}))
    assert credentials.current() == Credentials(headers={"Authorization": basic("ann", "pw")})


@mock_aws
def test_a_missing_secret_is_retryable_and_named_when_read_per_attempt() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    credentials = CredentialStore(client).for_source(source_with(OAUTH2))
    with pytest.raises(RetryableError, match=r"source 'api-x': could not read secret 's': .*ResourceNotFound"):
        credentials.current()


def token(value: str, expires_in: int = 3600) -> requests.Response:
    return response(200, {"access_token": value, "token_type": "Bearer", "expires_in": expires_in})


def oauth2_client(vendor: StubSession, tokens: StubSession, max_attempts: int = 3) -> VendorClient:
    store = CredentialStore.from_values(
        {"s": json.dumps({"client_id": "my-client", "client_secret": SECRET})}, session=tokens
    )
    source = source_with(OAUTH2, max_attempts)
    return VendorClient(source, vendor, store.for_source(source), sleep=lambda _: None)


def sent_tokens(vendor: StubSession) -> list[str]:
    return [call["headers"]["Authorization"] for call in vendor.calls]


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_401_renews_the_token_once_and_the_request_is_sent_again(max_attempts: int) -> None:
    # Given a token the API no longer takes (revoked, or expired early), and a token endpoint with a new one
    vendor = StubSession(response(401), response(200, {"data": [1]}))
    tokens = StubSession(token("tok-1"), token("tok-2"))
    client = oauth2_client(vendor, tokens, max_attempts)
    # When a page is fetched
    page = client.fetch(REQUEST, Deadline.unbounded())
    # Then the 401 dropped the first token, the second was fetched, and the request went again with it
    assert page.document == {"data": [1]} and page.attempts == 2
    assert sent_tokens(vendor) == ["Bearer tok-1", "Bearer tok-2"]
    assert len(tokens.calls) == 2


def test_a_second_401_with_a_renewed_token_is_a_permanent_error_saying_so() -> None:
    vendor = StubSession(response(401), response(401), response(200))
    tokens = StubSession(token("tok-1"), token("tok-2"), token("tok-3"))
    client = oauth2_client(vendor, tokens)
    with pytest.raises(PermanentHttpError) as raised:
        client.fetch(REQUEST, Deadline.unbounded())
    assert raised.value.status == 401
    assert str(raised.value) == (
        "401 from https://api.example.com/things?page=1, again with renewed credentials: the vendor refuses them "
        "(check the client's scopes, audience and access to this API)"
    )
    assert sent_tokens(vendor) == ["Bearer tok-1", "Bearer tok-2"] and len(tokens.calls) == 2


def test_a_token_that_expires_between_requests_is_renewed_before_the_next_one() -> None:
    # Given tokens that last 2 seconds (kept for 1: half their life, under the 60 s margin) on a fake clock
    now = [0.0]
    store = CredentialStore.from_values(
        {"s": json.dumps({"client_id": "c", "client_secret": SECRET})},
        session=StubSession(token("tok-1", 2), token("tok-2", 2)),
        clock=lambda: now[0],
    )
    source = source_with(OAUTH2)
    vendor = StubSession(response(200), response(200), response(200))
    client = VendorClient(source, vendor, store.for_source(source), sleep=lambda _: None)
    # When pages are fetched at 0 s, 0.9 s and 1.5 s
    for at in (0.0, 0.9, 1.5):
        now[0] = at
        client.fetch(REQUEST, Deadline.unbounded())
    # Then the third went with a new token, asked for before the old one expired: no 401 needed
    assert sent_tokens(vendor) == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


def test_a_401_to_a_fixed_secret_is_not_sent_again() -> None:
    vendor = StubSession(response(401), response(200))
    store = CredentialStore.from_values({"s": json.dumps({"username": "ann", "password": "pw"})})
    source = source_with({"type": "http_basic", "secret_name": "s"})
    client = VendorClient(source, vendor, store.for_source(source), sleep=lambda _: None)
    with pytest.raises(PermanentHttpError, match=r"^401 from https://api.example.com/things\?page=1$"):
        client.fetch(REQUEST, Deadline.unbounded())
    assert len(vendor.calls) == 1


def test_a_token_endpoint_that_fails_is_retried_with_the_sources_retries() -> None:
    # Given a token endpoint answering 503 once
    vendor = StubSession(response(200))
    client = oauth2_client(vendor, StubSession(response(503), token("tok-1")))
    # When a page is fetched: the 503 is retried as the vendor's own would be, then the page comes
    client.fetch(REQUEST, Deadline.unbounded())
    assert sent_tokens(vendor) == ["Bearer tok-1"]


def test_credentials_of_every_kind_never_show_in_reprs() -> None:
    store = CredentialStore.from_values({"s": json.dumps({"client_id": "c", "client_secret": SECRET})})
    authenticator = store.for_source(source_with(OAUTH2))
    shown = f"{store!r} {authenticator!r} {store.tokens!r}"
    assert SECRET not in shown and "api-x" in shown
