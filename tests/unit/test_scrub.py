"""Error texts that quote the vendor are scrubbed of the request's credentials (a vendor may echo them back):
Credentials.scrub per kind of credential, and the vendor client's errors (a GraphQL message echoing the key,
cut at 200 characters in the middle of it; a 401 renewed and refused again)."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest

from apilake.auth import Credentials, CredentialStore, renewing
from apilake.config import Source, parse_sources
from apilake.exceptions import BadResponseError, ParkMessageError, PermanentHttpError, TransientHttpError
from apilake.http import Deadline, VendorClient
from apilake.oauth2 import IssuedToken
from apilake.pagination import PageRequest
from tests.unit.test_http import StubSession, response

KEY = "k3y/d0+n0t=l0g"  # URL-encoded: k3y%2Fd0%2Bn0t%3Dl0g (or k3y/d0%2Bn0t%3Dl0g, a slash kept)
TOKEN = "t0k3n-9d8c7b6a"
BASIC = "Basic " + base64.b64encode(b"sk_live_4eC39H:pa55w0rd").decode()


@pytest.mark.parametrize(
    ("credentials", "text", "scrubbed"),
    [
        pytest.param(
            Credentials(headers={"X-Api-Key": KEY}),
            f"invalid key {KEY} for this query",
            "invalid key *** for this query",
            id="a header's value",
        ),
        pytest.param(
            Credentials(params={"api_key": KEY}),
            "you sent https://api.example.com/q?api_key=k3y%2Fd0%2Bn0t%3Dl0g and /q/k3y/d0%2Bn0t%3Dl0g",
            "you sent https://api.example.com/q?api_key=*** and /q/***",
            id="a query value, URL-encoded both ways",
        ),
        pytest.param(
            Credentials(headers={"Authorization": f"Bearer {TOKEN}"}),
            f"token {TOKEN} expired; header was 'Bearer {TOKEN}'",
            "token *** expired; header was '***'",
            id="a bearer token, alone and with its scheme",
        ),
        pytest.param(
            Credentials(headers={"Authorization": BASIC}),
            f"user sk_live_4eC39H (password pa55w0rd) refused: {BASIC.split()[1]}",
            "user *** (password ***) refused: ***",
            id="basic: username, password and their base64",
        ),
        pytest.param(
            Credentials(headers={"X-Account-Id": "42", "X-Token": TOKEN}),
            f"account 42 has no access with {TOKEN}",
            "account 42 has no access with ***",
            id="a value under 4 characters is left",
        ),
        pytest.param(Credentials(), f"nothing to scrub in {KEY}", f"nothing to scrub in {KEY}", id="no credentials"),
    ],
)
def test_scrub_replaces_each_credential_value(credentials: Credentials, text: str, scrubbed: str) -> None:
    assert credentials.scrub(text) == scrubbed


def source(**extra: Any) -> Source:
    raw = {
        "name": "api-x",
        "base_url": "https://api.example.com",
        "path": "/things",
        "method": "POST",
        "records_path": "data",
        "error_path": "errors",
        "pagination": {"type": "single"},
        "auth": {"type": "api_key", "secret_name": "apilake/x", "name": "X-Api-Key"},
        "retries": {"max_attempts": 1},
        **extra,
    }
    return parse_sources({"sources": [raw]}, "test").get("api-x")


def fetch(config: Source, *answers: Any) -> BaseException:
    store = CredentialStore.from_values({"apilake/x": KEY, "apilake/oauth": '{"client_id": "c", "client_secret": "s"}'})
    session = StubSession(*answers)
    store.tokens._fetch = lambda request: _issued(TOKEN)
    client = VendorClient(config, session, store.for_source(config), sleep=lambda _: None)
    with pytest.raises((BadResponseError, PermanentHttpError)) as raised:
        client.fetch(PageRequest("https://api.example.com/things", body={}), Deadline.unbounded())
    return raised.value


def _issued(token: str) -> IssuedToken:
    return IssuedToken(token, 3600.0)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            f"API key {KEY} may not read 'things'",
            "reports 1 error(s) at 'errors': \"API key *** may not read 'things'\"",
            id="the key in the vendor's words",
        ),
        pytest.param(
            "x" * 190 + KEY,
            f"reports 1 error(s) at 'errors': '{'x' * 190}***'",
            id="the key across the 200-character cut: scrubbed before the cut",
        ),
    ],
)
def test_a_graphql_error_echoing_the_key_is_quoted_without_it(message: str, expected: str) -> None:
    # given a vendor whose 200 reports an error that quotes the API key it was sent
    error = fetch(source(), response(200, {"errors": [{"message": message}]}))
    # when the page fails, then its reason quotes the vendor with *** for the key
    assert str(error) == f"the response of https://api.example.com/things?page=1 {expected}"
    assert KEY[:4] not in str(error)


def test_a_graphql_error_echoing_the_token_is_quoted_without_it() -> None:
    # given an OAuth2 source whose vendor says which token it was sent, in a 200 that reports an error
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": "https://a.example.com/t",
        "secret_name": "apilake/oauth",
    }
    error = fetch(source(auth=oauth), response(200, {"errors": [f"token {TOKEN} lacks scope read"]}))
    # then the reason has *** for the token
    assert str(error).endswith("reports 1 error(s) at 'errors': 'token *** lacks scope read'")


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (PermanentHttpError(f"403 from https://api.example.com/things: {KEY}", status=403), {"status": 403}),
        (
            TransientHttpError(f"503 from https://api.example.com/things: {KEY}", status=503, retry_after=2.0),
            {"status": 503, "retry_after": 2.0},
        ),
        (
            ParkMessageError(f"429 from https://api.example.com/things: {KEY}", delay_seconds=120),
            {"delay_seconds": 120},
        ),
        (BadResponseError(f"records not found: {KEY}"), {}),
    ],
    ids=["permanent", "transient", "parked", "bad response"],
)
def test_every_error_of_a_fetch_leaves_scrubbed_with_its_fields(error: Exception, fields: dict[str, Any]) -> None:
    # given a fetch that fails with an error quoting the key of its attempt
    attempted = SimpleNamespace(credentials=Credentials(headers={"X-Api-Key": KEY}))

    def failing() -> None:
        raise error

    # when it fails through renewing (the vendor client's fetch), then the same error leaves, its text scrubbed
    with pytest.raises(type(error)) as raised:
        renewing(Credentials(), failing, attempted)
    assert raised.value is error and str(error).endswith(": ***")
    assert {name: getattr(error, name) for name in fields} == fields
