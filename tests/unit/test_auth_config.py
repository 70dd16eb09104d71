"""The auth kinds of a source (http_basic, oauth2_client_credentials, headers_from_secret): valid configs load
with their defaults, invalid ones fail with a message naming file, source and field."""

from __future__ import annotations

from typing import Any

import pytest

from apilake.auth_config import HeadersFromSecretAuth, HttpBasicAuth, OAuth2ClientCredentialsAuth
from apilake.config import ApiKeyAuth, Source, parse_sources
from apilake.exceptions import ConfigError
from apilake_dev.template.generate import secret_arn

OAUTH2 = {
    "type": "oauth2_client_credentials",
    "token_url": "https://auth.example.com/oauth/token",
    "secret_name": "apilake/x",
}
BASIC = {"type": "http_basic", "secret_name": "apilake/x"}
HEADERS = {"type": "headers_from_secret", "secret_name": "apilake/x", "headers": {"X-Account-Id": "account"}}


def source_with(auth: dict[str, Any], **extra: Any) -> Source:
    raw = {
        **extra,
        "name": "api-x",
        "base_url": "https://api.example.com",
        "records_path": "data",
        "pagination": {"type": "single"},
        "auth": auth,
    }
    return parse_sources({"version": 1, "sources": [raw]}, "sources.yaml").get("api-x")


def test_the_auth_models_stay_importable_from_config() -> None:
    assert ApiKeyAuth.__module__ == "apilake.auth_config"


def test_oauth2_defaults() -> None:
    auth = source_with(OAUTH2).auth
    assert isinstance(auth, OAuth2ClientCredentialsAuth)
    assert (auth.client_id_field, auth.client_secret_field) == ("client_id", "client_secret")
    assert (auth.scopes, auth.token_params, auth.client_auth, auth.refresh_margin_seconds) == ([], {}, "body", 60)


def test_http_basic_and_headers_defaults() -> None:
    basic = source_with(BASIC).auth
    assert isinstance(basic, HttpBasicAuth) and (basic.username_field, basic.password_field) == ("username", "password")
    headers = source_with(HEADERS).auth
    assert isinstance(headers, HeadersFromSecretAuth) and headers.headers == {"X-Account-Id": "account"}


VALID = [
    pytest.param(
        {
            **OAUTH2,
            "token_url": "https://example.auth0.com/oauth/token",
            "token_params": {"audience": "https://example.auth0.com/api/v2/"},
            "scopes": ["read:users", "read:logs"],
        },
        id="Auth0: audience, scopes",
    ),
    pytest.param(
        {**OAUTH2, "token_url": "https://accounts.spotify.com/api/token", "client_auth": "basic"},
        id="Spotify: client auth basic",
    ),
    pytest.param(
        {**OAUTH2, "token_url": "https://zoom.us/oauth/token", "token_params": {"account_id": "abc", "n": 3}},
        id="Zoom: account_id, a number",
    ),
    pytest.param(
        {
            **OAUTH2,
            "token_url": "https://zoom.us/oauth/token",
            "grant_type": "account_credentials",
            "token_params": {"account_id": "AbC123"},
            "client_auth": "basic",
        },
        id="Zoom server-to-server: account_credentials",
    ),
    pytest.param({**OAUTH2, "token_url": "http://127.0.0.1:8080/token"}, id="loopback over http"),
    pytest.param({**OAUTH2, "token_url": "https://login.example.com/t?api-version=2"}, id="token url with a query"),
    pytest.param({**OAUTH2, "refresh_margin_seconds": 0}, id="no margin"),
    pytest.param({**OAUTH2, "client_id_field": "id", "client_secret_field": "secret"}, id="secret fields"),
    pytest.param({**BASIC, "username_field": "key", "password_field": "pw"}, id="basic, fields"),
    pytest.param(
        {**HEADERS, "headers": {"X-Api-Key": "key", "X-Account-Id": "account", "X-Tenant": "tenant"}},
        id="three headers from one secret",
    ),
]


@pytest.mark.parametrize("auth", VALID)
def test_valid_auth_configs_load(auth: dict[str, Any]) -> None:
    assert source_with(auth).auth.type == auth["type"]


PREFIX = "sources.yaml: source 'api-x': auth."
INVALID = [
    pytest.param(
        {**OAUTH2, "token_url": "http://auth.example.com/token"},
        "token_url: Value error, must use https (plain http is allowed for loopback hosts only), "
        "got 'http://auth.example.com/token'",
        id="plain http",
    ),
    pytest.param(
        {**OAUTH2, "token_url": "ftp://auth.example.com/token"},
        "token_url: Value error, must be an absolute http(s) URL, got 'ftp://auth.example.com/token'",
        id="not http",
    ),
    pytest.param(
        {**OAUTH2, "token_url": "https://id:pw@auth.example.com/token"},
        "token_url: Value error, must not carry a user or password: the client's credentials come from the secret",
        id="user and password in the url",
    ),
    pytest.param(
        {**OAUTH2, "token_url": "https://auth.example.com/token#x"},
        "token_url: Value error, must not carry a fragment",
        id="fragment",
    ),
    pytest.param({"type": "oauth2_client_credentials", "secret_name": "s"}, "token_url: Field required", id="no url"),
    pytest.param(
        {**OAUTH2, "scopes": ["read write"]},
        "scopes: Value error, scope 'read write': one scope per item, without spaces, quotes or backslashes "
        "(they are sent space-separated)",
        id="two scopes in one",
    ),
    pytest.param({**OAUTH2, "scopes": "read"}, "scopes: Input should be a valid list", id="scopes as text"),
    pytest.param(
        {**OAUTH2, "scopes": ["read", "read"]}, "scopes: Value error, a scope is listed more than once", id="dup scope"
    ),
    pytest.param(
        {**OAUTH2, "token_params": {"grant_type": "password"}},
        "token_params: Value error, grant_type: apilake sets it (from grant_type: client_credentials or "
        "account_credentials)",
        id="grant_type in token_params",
    ),
    pytest.param(
        {**OAUTH2, "grant_type": "password"},
        "grant_type: Input should be 'client_credentials' or 'account_credentials'",
        id="a grant apilake does not make",
    ),
    pytest.param(
        {**OAUTH2, "grant_type": "account_credentials", "token_params": {"audience": "x"}},
        "token_params: Value error, grant_type account_credentials (Zoom's server-to-server OAuth) needs the "
        "account's id: token_params: {account_id: <your account id>}",
        id="Zoom's grant without the account id",
    ),
    pytest.param(
        {**OAUTH2, "token_params": {"scope": "read"}},
        "token_params: Value error, scope: apilake sets it (list the scopes in scopes)",
        id="scope in token_params",
    ),
    pytest.param(
        {**OAUTH2, "token_params": {"client_secret": "hunter2"}},
        "token_params: Value error, client_secret: apilake sets it (from the secret's client_secret_field)",
        id="client secret in token_params",
    ),
    pytest.param(
        {**OAUTH2, "token_params": {"audience": None}},
        "token_params.audience: Value error, must be a string, a number or a boolean, not null",
        id="null token param",
    ),
    pytest.param(
        {**OAUTH2, "client_auth": "header"}, "client_auth: Input should be 'body' or 'basic'", id="client_auth"
    ),
    pytest.param(
        {**OAUTH2, "refresh_margin_seconds": -1},
        "refresh_margin_seconds: Input should be greater than or equal to 0",
        id="negative margin",
    ),
    pytest.param(
        {**OAUTH2, "refresh_margin_seconds": 7200},
        "refresh_margin_seconds: Input should be less than or equal to 3600",
        id="margin over an hour",
    ),
    pytest.param(
        {**OAUTH2, "client_secret": "hunter2"}, "client_secret: Extra inputs are not permitted", id="secret inline"
    ),
    pytest.param({"type": "http_basic"}, "secret_name: Field required", id="basic, no secret"),
    pytest.param({**BASIC, "password": "hunter2"}, "password: Extra inputs are not permitted", id="password inline"),
    pytest.param(
        {**BASIC, "username_field": ""}, "username_field: String should have at least 1 character", id="empty field"
    ),
    pytest.param(
        {**HEADERS, "headers": {}},
        "headers: Dictionary should have at least 1 item after validation, not 0",
        id="no headers",
    ),
    pytest.param({**HEADERS, "headers": None}, "headers: Input should be a valid dictionary", id="null headers"),
    pytest.param(
        {**HEADERS, "headers": {"X Key": "key"}},
        "headers: Value error, header 'X Key': not a valid header name (letters, digits and !#$%&'*+.^_`|~-)",
        id="bad header name",
    ),
    pytest.param(
        {**HEADERS, "headers": {"X-Key": "key", "x-key": "other"}},
        "headers: Value error, headers 'X-Key' and 'x-key' are the same header (case aside)",
        id="one header twice",
    ),
    pytest.param(
        {**HEADERS, "headers": {"X-Key": ""}},
        "headers.X-Key: String should have at least 1 character",
        id="empty field name",
    ),
    pytest.param(
        {"type": "kerberos"},
        "type: Input tag 'kerberos' found using 'type' does not match any of the expected tags: 'none', 'api_key', "
        "'bearer', 'http_basic', 'oauth2_client_credentials', 'headers_from_secret'",
        id="unknown type",
    ),
]


@pytest.mark.parametrize(("auth", "message"), INVALID)
def test_invalid_auth_configs_name_the_field(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        source_with(auth)
    assert PREFIX + message in str(raised.value)


def test_sources_asking_the_same_endpoint_for_the_same_token_share_its_key() -> None:
    # Given two sources with the same token endpoint, scopes (in any order) and token params
    first = OAuth2ClientCredentialsAuth.model_validate({**OAUTH2, "scopes": ["a", "b"], "token_params": {"x": "1"}})
    second = OAuth2ClientCredentialsAuth.model_validate({**OAUTH2, "scopes": ["b", "a"], "token_params": {"x": 1}})
    other = OAuth2ClientCredentialsAuth.model_validate({**OAUTH2, "scopes": ["a"], "token_params": {"x": "1"}})
    # Then the first two share a token, the third (other scopes) has its own
    assert first.token_key == second.token_key != other.token_key


@pytest.mark.parametrize("auth", [OAUTH2, BASIC, HEADERS], ids=["oauth2", "basic", "headers"])
def test_the_worker_may_read_the_secret_of_every_new_kind(auth: dict[str, Any]) -> None:
    # The template grants secretsmanager:GetSecretValue on the source's secret (make template)
    assert secret_arn(source_with(auth)) == (
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:apilake/x-??????"
    )
    assert secret_arn(source_with({"type": "none"})) is None


@pytest.mark.parametrize(
    ("auth", "headers", "message"),
    [
        pytest.param(
            HEADERS,
            {"Accept": "application/json", "x-account-id": "42"},
            "sources.yaml: source 'api-x': headers.x-account-id: Value error, the header 'X-Account-Id' is set by "
            "auth (headers_from_secret): drop it from headers (header names are case-insensitive)",
            id="a header of the secret, case aside",
        ),
        pytest.param(
            {"type": "api_key", "secret_name": "s"},
            {"X-Api-Key": "k"},
            "sources.yaml: source 'api-x': headers.X-Api-Key: Value error, the header 'X-Api-Key' is set by auth "
            "(api_key): drop it from headers (header names are case-insensitive)",
            id="the API key's header",
        ),
        pytest.param(
            OAUTH2,
            {"authorization": "Bearer x"},
            "sources.yaml: source 'api-x': headers.authorization: Value error, the header 'Authorization' is set by "
            "auth (oauth2_client_credentials): drop it from headers (header names are case-insensitive)",
            id="Authorization beside a token",
        ),
    ],
)
def test_a_header_the_auth_sets_is_refused_in_headers(
    auth: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    # given a source whose own headers repeat one its auth sets (which would win is not for the file to guess)
    with pytest.raises(ConfigError) as raised:
        # when it is validated
        source_with(auth, headers=headers)
    # then it is refused at that header
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        pytest.param({"type": "api_key", "secret_name": "s", "location": "query"}, {"X-Api-Key": "k"}, id="query key"),
        pytest.param(HEADERS, {"X-Account": "1", "Accept": "application/json"}, id="other headers"),
    ],
)
def test_headers_the_auth_does_not_set_are_kept(auth: dict[str, Any], headers: dict[str, str]) -> None:
    assert source_with(auth, headers=headers).headers == headers
