"""The models of a source's ``auth:`` (one per kind, told apart by ``type``). :mod:`apilake.config` re-exports
them; :mod:`apilake.auth` turns them into the credentials of each request.

Every secret is read from Secrets Manager by name at run time: the sources file holds names, never values.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

import ipaddress
import re
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator, model_validator

from apilake.exceptions import field_error
from apilake.pagination_config import ParamName, _Model
from apilake.param_text import ParamValue

SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9/_+=.@-]{1,512}$")]
# A key of a JSON secret ({"client_id": ..., "client_secret": ...}).
SecretField = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# An HTTP header's name (RFC 9110 5.1: a token). This and SCOPE: patterns compiled (and cached by re) when a
# file is validated, which a Lambda reading the validated copy never does.
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}"
# An OAuth2 scope (RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )).
SCOPE = r"[\x21\x23-\x5b\x5d-\x7e]{1,256}"
# The form fields of a client credentials grant that apilake sets itself (RFC 6749 4.4.2 and 2.3.1).
RESERVED_TOKEN_PARAMS = {
    "grant_type": "from grant_type: client_credentials or account_credentials",
    "scope": "list the scopes in scopes",
    "client_id": "from the secret's client_id_field",
    "client_secret": "from the secret's client_secret_field",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NoAuth(_Model):
    type: Literal["none"]


class ApiKeyAuth(_Model):
    """An API key read from Secrets Manager by name, sent in a header or a query parameter."""

    type: Literal["api_key"]
    secret_name: SecretName
    # When the secret is a JSON object, the key whose value is the API key.
    secret_field: ParamName | None = None
    location: Literal["header", "query"] = "header"
    name: ParamName = "X-Api-Key"


class BearerAuth(_Model):
    """``Authorization: Bearer <token>``, the token read from Secrets Manager by name."""

    type: Literal["bearer"]
    secret_name: SecretName
    secret_field: ParamName | None = None


class HttpBasicAuth(_Model):
    """``Authorization: Basic base64(username:password)`` (RFC 7617, UTF-8), both read from one JSON secret.
    The password may be empty (Stripe: the secret key as the username, no password)."""

    type: Literal["http_basic"]
    secret_name: SecretName
    username_field: SecretField = "username"
    password_field: SecretField = "password"


class OAuth2ClientCredentialsAuth(_Model):
    """An access token from the vendor's token endpoint (RFC 6749 4.4, client credentials), sent as
    ``Authorization: Bearer <token>``; kept per container until shortly before it expires, fetched again once
    when the API answers 401. The client id and secret are two fields of one JSON secret. ``grant_type``
    account_credentials is Zoom's server-to-server OAuth (its account id in ``token_params.account_id``)."""

    type: Literal["oauth2_client_credentials"]
    token_url: str
    # The token request's grant_type: client_credentials (RFC 6749 4.4), or account_credentials (Zoom).
    grant_type: Literal["client_credentials", "account_credentials"] = "client_credentials"
    secret_name: SecretName
    client_id_field: SecretField = "client_id"
    client_secret_field: SecretField = "client_secret"
    scopes: list[str] = Field(default_factory=list)  # sent space-separated as ``scope``
    # Extra form fields of the token request (Auth0's audience, a resource): scalars, sent as text.
    token_params: dict[ParamName, ParamValue] = Field(default_factory=dict)
    # How the client authenticates to the token endpoint: form fields (client_id, client_secret) or HTTP basic.
    client_auth: Literal["body", "basic"] = "body"
    # A token is fetched again this long before it expires (at most half its lifetime before).
    refresh_margin_seconds: float = Field(default=60, ge=0, le=3600)

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"must use https (plain http is allowed for loopback hosts only), got {value!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user or password: the client's credentials come from the secret")
        if parts.fragment:
            raise ValueError("must not carry a fragment")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not re.fullmatch(SCOPE, scope):
                raise ValueError(
                    f"scope {scope!r}: one scope per item, without spaces, quotes or backslashes "
                    "(they are sent space-separated)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a scope is listed more than once")
        return value

    @field_validator("token_params")
    @classmethod
    def _token_params(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in RESERVED_TOKEN_PARAMS:
                raise ValueError(f"{name}: apilake sets it ({RESERVED_TOKEN_PARAMS[name]})")
        return value

    @model_validator(mode="after")
    def _account_id(self) -> Self:
        if self.grant_type == "account_credentials" and not self.token_params.get("account_id"):
            raise field_error(
                self,
                "token_params",
                "grant_type account_credentials (Zoom's server-to-server OAuth) needs the account's id: "
                "token_params: {account_id: <your account id>}",
            )
        return self

    @property
    def token_key(self) -> tuple[str, ...]:
        """What the token depends on, besides the client id: sources that agree share a token."""
        params = tuple(f"{name}={value}" for name, value in sorted(self.token_params.items()))
        return (self.token_url, self.grant_type, self.client_auth, " ".join(sorted(self.scopes)), *params)


class HeadersFromSecretAuth(_Model):
    """Several headers, each the value of one field of a JSON secret (``headers: {X-Account-Id: account}``)."""

    type: Literal["headers_from_secret"]
    secret_name: SecretName
    headers: dict[str, SecretField] = Field(min_length=1)  # header name -> the secret's field

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name in value:
            if not re.fullmatch(HEADER_NAME, name):
                raise ValueError(f"header {name!r}: not a valid header name (letters, digits and !#$%&'*+.^_`|~-)")
            if name.lower() in seen:
                raise ValueError(f"headers {seen[name.lower()]!r} and {name!r} are the same header (case aside)")
            seen[name.lower()] = name
        return value


Auth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | HttpBasicAuth | OAuth2ClientCredentialsAuth | HeadersFromSecretAuth,
    Field(discriminator="type"),
]


def auth_headers(
    auth: NoAuth | ApiKeyAuth | BearerAuth | HttpBasicAuth | OAuth2ClientCredentialsAuth | HeadersFromSecretAuth,
) -> list[str]:
    """The headers a source's auth sets on every request (a source's own ``headers`` must not set them too)."""
    if isinstance(auth, ApiKeyAuth):
        return [auth.name] if auth.location == "header" else []
    if isinstance(auth, BearerAuth | HttpBasicAuth | OAuth2ClientCredentialsAuth):
        return ["Authorization"]
    if isinstance(auth, HeadersFromSecretAuth):
        return list(auth.headers)
    return []
