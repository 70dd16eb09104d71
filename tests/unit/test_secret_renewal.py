"""Credentials kept apart and kept fresh: two sources with different OAuth2 client secrets never share a token
(review S1), and a static secret rotated in Secrets Manager is read again on a 401 (review S11), in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.auth import CredentialStore
from apilake.config import Source, parse_sources
from apilake.exceptions import PermanentHttpError
from apilake.http import Deadline, VendorClient
from apilake.oauth2 import TokenRequest
from tests.unit.test_auth_kinds import REQUEST, TOKEN_URL, basic, token
from tests.unit.test_http import StubSession, response
from tests.unit.test_oauth2 import RecordingSession
from tests.unit.test_oauth2 import auth as oauth2_auth


def source(name: str, auth: dict[str, Any]) -> Source:
    raw = {
        "name": name,
        "base_url": "https://api.example.com",
        "path": "/things",
        "records_path": "data",
        "pagination": {"type": "single"},
        "auth": auth,
        "retries": {"max_attempts": 1},
    }
    return parse_sources({"sources": [raw]}, "test").get(name)


def oauth2(secret_name: str) -> dict[str, Any]:
    return {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "secret_name": secret_name}


def client_secret(client_id: str, secret: str) -> str:
    return json.dumps({"client_id": client_id, "client_secret": secret})


# --- S1: one token per client id, client secret and secret name ------------------------------------------------


def test_two_sources_with_different_client_secrets_never_share_a_token() -> None:
    # Given sources a and b of one token endpoint, the same client id, b's secret holding a wrong client secret
    tokens = RecordingSession(token("TOKEN-A"), token("TOKEN-B"))
    store = CredentialStore.from_values(
        {"sa": client_secret("client-1", "right-secret"), "sb": client_secret("client-1", "wrong-secret")},
        session=tokens,
    )
    # When each asks for its credentials
    got = [store.for_source(source(name, oauth2(secret))).current() for name, secret in (("a", "sa"), ("b", "sb"))]
    # Then each asked the endpoint with its own client secret, and got its own token
    assert [found.headers["Authorization"] for found in got] == ["Bearer TOKEN-A", "Bearer TOKEN-B"]
    assert [call["form"]["client_secret"] for call in tokens.calls] == ["right-secret", "wrong-secret"]


def test_sources_reading_the_same_client_from_two_secrets_do_not_share_a_token_either() -> None:
    same = client_secret("client-1", "s3cret-value")
    tokens = StubSession(token("TOKEN-A"), token("TOKEN-B"))
    store = CredentialStore.from_values({"sa": same, "sb": same}, session=tokens)
    for name, secret in (("a", "sa"), ("b", "sb")):
        store.for_source(source(name, oauth2(secret))).current()
    assert len(tokens.calls) == 2


def test_sources_of_one_client_and_one_secret_share_their_token() -> None:
    tokens = StubSession(token("TOKEN-A"))
    store = CredentialStore.from_values({"s": client_secret("client-1", "s3cret-value")}, session=tokens)
    shared = [store.for_source(source(name, oauth2("s"))).current() for name in ("a", "b")]
    assert shared[0] == shared[1] and len(tokens.calls) == 1


@pytest.mark.parametrize(
    ("client_id", "secret", "secret_name"),
    [
        ("id-1", "other-secret", "apilake/x"),
        ("id-2", "s3cret-value", "apilake/x"),
        ("id-1", "s3cret-value", "apilake/y"),
    ],
    ids=["client secret", "client id", "secret name"],
)
def test_the_token_key_tells_clients_apart_without_holding_the_secret(
    client_id: str, secret: str, secret_name: str
) -> None:
    def key(client_id: str, secret: str, secret_name: str) -> tuple[str, ...]:
        return TokenRequest("api-x", oauth2_auth(secret_name=secret_name), client_id, secret, (1.0, 1.0)).key

    reference = key("id-1", "s3cret-value", "apilake/x")
    assert key(client_id, secret, secret_name) != reference
    assert not any("s3cret-value" in part for part in reference)
    # a pair split elsewhere ("id-1s" + "3cret-value") is another client
    assert key("id-1s", "3cret-value", "apilake/x") != reference


# --- S11: a rotated static secret, read again on a 401 -----------------------------------------------------------


class SecretReads:
    """Counts Secrets Manager's GetSecretValue calls of a client."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        client.meta.events.register("before-call.secrets-manager.GetSecretValue", self._called)

    def _called(self, **_: Any) -> None:
        self.count += 1


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


STATIC_KINDS = [
    pytest.param({"type": "api_key", "secret_name": "s", "name": "X-Api-Key"}, "k-old-1", "k-new-2", id="api_key"),
    pytest.param({"type": "bearer", "secret_name": "s"}, "t-old-1", "t-new-2", id="bearer"),
    pytest.param(
        {"type": "http_basic", "secret_name": "s"},
        json.dumps({"username": "ann", "password": "pw-old-1"}),
        json.dumps({"username": "ann", "password": "pw-new-2"}),
        id="http_basic",
    ),
    pytest.param(
        {"type": "headers_from_secret", "secret_name": "s", "headers": {"X-Key": "key"}},
        json.dumps({"key": "h-old-1"}),
        json.dumps({"key": "h-new-2"}),
        id="headers_from_secret",
    ),
]


def sent(vendor: StubSession) -> list[str]:
    """The credential each request carried (whichever header the kind sets)."""
    return [
        call["headers"].get("X-Api-Key") or call["headers"].get("X-Key") or call["headers"]["Authorization"]
        for call in vendor.calls
    ]


def expected_header(auth: dict[str, Any], secret: str) -> str:
    if auth["type"] == "bearer":
        return f"Bearer {secret}"
    if auth["type"] == "http_basic":
        return basic("ann", json.loads(secret)["password"])
    return json.loads(secret)["key"] if auth["type"] == "headers_from_secret" else secret


@pytest.mark.parametrize(("auth", "old", "new"), STATIC_KINDS)
def test_a_secret_rotated_after_it_was_read_is_read_again_on_a_401_and_the_page_sent_once_more(
    secrets: Any, auth: dict[str, Any], old: str, new: str
) -> None:
    # Given a source whose secret was read for page 1 (and cached for 300 s)
    secrets.create_secret(Name="s", SecretString=old)
    reads = SecretReads(secrets)
    api = source("api-x", auth)
    vendor = StubSession(response(200, {"data": [1]}), response(401), response(200, {"data": [2]}))
    client = VendorClient(api, vendor, CredentialStore(secrets).for_source(api), sleep=lambda _: None)
    client.fetch(REQUEST, Deadline.unbounded())
    # When the secret is rotated, and the next page is answered 401 to the old value
    secrets.put_secret_value(SecretId="s", SecretString=new)
    page = client.fetch(REQUEST, Deadline.unbounded())
    # Then the secret was read once more, past the cache, and the page sent again with the new value
    assert page.document == {"data": [2]} and page.attempts == 2
    assert sent(vendor) == [expected_header(auth, old), expected_header(auth, old), expected_header(auth, new)]
    assert reads.count == 2


def test_a_401_to_a_secret_that_did_not_change_is_not_sent_again(secrets: Any) -> None:
    # Given an API key the vendor refuses, not rotated
    secrets.create_secret(Name="s", SecretString="k-revoked-1")
    reads = SecretReads(secrets)
    api = source("api-x", {"type": "api_key", "secret_name": "s", "name": "X-Api-Key"})
    vendor = StubSession(response(401), response(200))
    client = VendorClient(api, vendor, CredentialStore(secrets).for_source(api), sleep=lambda _: None)
    # When a page is fetched: one 401, the secret read once more, the same value
    with pytest.raises(PermanentHttpError, match=r"^401 from https://api.example.com/things\?page=1$"):
        client.fetch(REQUEST, Deadline.unbounded())
    # Then no second request went out
    assert len(vendor.calls) == 1 and reads.count == 2


def test_a_401_to_an_oauth2_token_reads_the_client_secret_again_for_the_next_token(secrets: Any) -> None:
    # Given an OAuth2 source whose client secret was rotated after its first token
    secrets.create_secret(Name="s", SecretString=client_secret("client-1", "old-secret"))
    api = source("api-x", oauth2("s"))
    tokens = RecordingSession(token("tok-1"), token("tok-2"))
    store = CredentialStore(secrets, session=tokens)
    vendor = StubSession(response(200), response(401), response(200))
    client = VendorClient(api, vendor, store.for_source(api), sleep=lambda _: None)
    client.fetch(REQUEST, Deadline.unbounded())
    secrets.put_secret_value(SecretId="s", SecretString=client_secret("client-1", "new-secret"))
    # When the API refuses the token
    client.fetch(REQUEST, Deadline.unbounded())
    # Then the new token was asked for with the new client secret
    assert [call["headers"]["Authorization"] for call in vendor.calls] == ["Bearer tok-1"] * 2 + ["Bearer tok-2"]
    assert [call["form"]["client_secret"] for call in tokens.calls] == ["old-secret", "new-secret"]
