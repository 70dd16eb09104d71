"""Credentials: read a secret by name from Secrets Manager (cached), never log it.

A secret's value is stripped of surrounding whitespace (a secret made from a file keeps its last
newline) and refused if a control character is left in it: it goes into a header or a query
string, and the HTTP layer's own error for a bad header value quotes the value.

The credentials of a request are resolved for each attempt (:meth:`Authenticator.current`): a secret is read
through a cache of :data:`SECRET_MAX_AGE_SECONDS` (a rotated secret is picked up), and an OAuth2 token can
expire in the middle of a run (:mod:`apilake.oauth2`). On a 401, :meth:`Authenticator.renew` says whether new
credentials are worth one more attempt: the source's secret is read again past the cache (rotated in Secrets
Manager a moment ago?), and an OAuth2 token is dropped; a static secret (api_key, bearer, http_basic,
headers_from_secret) is worth another attempt only when its value changed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import requests

from apilake.auth_config import (
    ApiKeyAuth,
    BearerAuth,
    HeadersFromSecretAuth,
    HttpBasicAuth,
    OAuth2ClientCredentialsAuth,
)
from apilake.config import Source
from apilake.exceptions import ApilakeError, CredentialsError, PermanentHttpError, RetryableError
from apilake.observability import logger

if TYPE_CHECKING:
    from apilake.oauth2 import TokenCache, TokenRequest

SECRET_MAX_AGE_SECONDS = 300
MIN_SCRUBBED_CHARS = 4  # a credential value shorter than this is not scrubbed from error texts (Credentials.scrub)


@dataclass(frozen=True, repr=False)
class Credentials:
    """Headers and query parameters to add to a request; ``repr`` never shows their values.

    A fixed set is its own :class:`Authenticator` (the same for every attempt, nothing to renew)."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Credentials(headers={sorted(self.headers)}, params={sorted(self.params)})"

    def current(self) -> Credentials:
        return self

    def renew(self, rejected: Credentials) -> bool:
        return False

    def redact(self, url: str) -> str:
        """``url`` with the value of every credential query parameter replaced by ``***`` (the whole query,
        if the URL cannot be read)."""
        return _redact(url, self.params)

    def strip(self, url: str) -> str:
        """``url`` without the credential query parameters (they are added again on each request)."""
        return _replace_params(url, dict.fromkeys(self.params))

    def scrub(self, text: str) -> str:
        """``text`` (an error's, quoting what the vendor said) with each credential value in it replaced by ``***``:
        every header and query value, the bearer token, basic's username and password (and their base64), as
        they are and URL-encoded. A value shorter than :data:`MIN_SCRUBBED_CHARS` is left: no secret, and
        replacing it everywhere would leave nothing to read."""
        values: set[str] = set()
        for name, value in [*self.headers.items(), *self.params.items()]:
            values.add(value)
            scheme, _, rest = value.partition(" ")
            if name.lower() != "authorization" or not rest:
                continue
            values.add(rest)  # the token (or basic's base64), without its scheme
            if scheme.lower() == "basic":
                with contextlib.suppress(ValueError):
                    pair = base64.b64decode(rest, validate=True).decode()
                    values.update((pair, *pair.split(":", 1)))
        return _scrubbed(text, values)


class Authenticator(Protocol):
    """A source's credentials, resolved for each attempt of a request."""

    def current(self) -> Credentials:
        """The credentials of the next attempt (a secret's value read, an access token fetched, as needed)."""
        ...

    def renew(self, rejected: Credentials) -> bool:
        """The vendor answered 401 to ``rejected``: True when new credentials are worth one more attempt."""
        ...

    def redact(self, url: str) -> str: ...

    def strip(self, url: str) -> str: ...


class _Attempted(Protocol):
    credentials: Credentials  # those of the latest attempt


def renewing[T](authenticator: Authenticator, fetch: Callable[[], T], attempted: _Attempted) -> T:
    """``fetch()``; after a 401 to credentials that can be renewed, ``fetch()`` once more with new ones. A second
    401 is a permanent error that says the renewed credentials were refused too. Every error's text is scrubbed
    of the credentials of the latest attempt (it may quote what the vendor said, which may echo them)."""
    try:
        return _renewing(authenticator, fetch, attempted)
    except ApilakeError as exc:
        scrub_error(exc, attempted.credentials.scrub)
        raise


def _renewing[T](authenticator: Authenticator, fetch: Callable[[], T], attempted: _Attempted) -> T:
    try:
        return fetch()
    except PermanentHttpError as exc:
        if exc.status != 401 or not authenticator.renew(attempted.credentials):
            raise
        said = attempted.credentials.scrub(str(exc))
        logger.info("401 from the vendor: trying once more with renewed credentials", extra={"error": said})
    try:
        return fetch()
    except PermanentHttpError as exc:
        if exc.status != 401:
            raise
        raise PermanentHttpError(
            f"{exc}, again with renewed credentials: the vendor refuses them (check the client's scopes, "
            "audience and access to this API)",
            status=401,
        ) from None


def _scrubbed(text: str, values: set[str]) -> str:
    """``text`` with each of ``values`` (as it is, and URL-encoded) replaced by ``***``, the longest first (a value
    inside another is not left half-replaced)."""
    spelt = {
        spelling for value in values for spelling in (value, quote(value, safe=""), quote(value), quote_plus(value))
    }
    for value in sorted(spelt, key=len, reverse=True):
        if len(value) >= MIN_SCRUBBED_CHARS:
            text = text.replace(value, "***")
    return text


def scrub_error(error: BaseException, scrub: Callable[[str], str]) -> None:
    """Scrub ``error``'s text with ``scrub`` (a :meth:`Credentials.scrub`) in place: its type and fields kept."""
    if error.args and isinstance(error.args[0], str):
        error.args = (scrub(error.args[0]), *error.args[1:])


def _redact(url: str, params: Mapping[str, str]) -> str:
    try:
        return _replace_params(url, dict.fromkeys(params, "***"))
    except ValueError:
        base, question, _ = url.partition("?")
        return base + question + ("***" if question else "")


def _replace_params(url: str, replacements: dict[str, str | None]) -> str:
    if not replacements:
        return url
    parts = urlsplit(url)
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in replacements:
            new = replacements[name]
            if new is None:
                continue
            value = new
        query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


# A secret's name, and whether to read it past the cache (``fresh``) -> its value (a string); raises
# CredentialsError or RetryableError, naming the secret only.
SecretReader = Callable[[str, bool], str]


class CredentialStore:
    """Resolves a source's auth into an :class:`Authenticator`, reading secrets through a cached provider
    (or from given values: :meth:`from_values`); one per container, it keeps the OAuth2 tokens."""

    def __init__(
        self,
        secrets_client: Any,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read: SecretReader | None = None
        if secrets_client is not None:
            self._read = _ManagedSecrets(secrets_client).read
        self._session = session
        self._clock = clock
        self._tokens: TokenCache | None = None
        self._tokens_lock = threading.Lock()

    @classmethod
    def from_values(
        cls,
        values: Mapping[str, str],
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> CredentialStore:
        """Secrets given by name -> value (``apilake sources try --secret NAME=VALUE``), not read from AWS."""
        store = cls(None, session=session, clock=clock)
        given = dict(values)

        def read(name: str, fresh: bool) -> str:
            if name not in given:
                raise CredentialsError(f"secret {name!r} was not given")
            return given[name]

        store._read = read
        return store

    @property
    def tokens(self) -> TokenCache:
        """The OAuth2 tokens of the container, made at the first OAuth2 source's first request: a container whose
        sources use other auth loads none of apilake.oauth2 (nor its token session)."""
        with self._tokens_lock:
            if self._tokens is None:
                from apilake.oauth2 import TokenCache, request_token

                session = self._session or _token_session()
                self._tokens = TokenCache(lambda request: request_token(session, request), clock=self._clock)
            return self._tokens

    def for_source(self, source: Source) -> Authenticator:
        if source.auth.type == "none":
            return Credentials()
        return SourceCredentials(source, self)

    def secret(self, source: Source, name: str, secret_field: str | None = None, *, empty_ok: bool = False) -> str:
        """The secret's value (stripped), or the value of one of its fields when it is a JSON object."""
        value = self._value(source, name, fresh=False)
        if not isinstance(value, str) or not value.strip():
            raise CredentialsError(f"source '{source.name}': secret {name!r} is empty or binary")
        if secret_field is not None:
            try:
                document = json.loads(value)
            except json.JSONDecodeError:
                raise CredentialsError(f"source '{source.name}': secret {name!r} is not a JSON object") from None
            found = document.get(secret_field) if isinstance(document, dict) else None
            if not isinstance(found, str) or not (found.strip() or empty_ok):
                raise CredentialsError(f"source '{source.name}': secret {name!r} has no string field {secret_field!r}")
            value = found
        value = value.strip()
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise CredentialsError(f"source '{source.name}': secret {name!r} has a control character in its value")
        return value

    def refresh(self, source: Source, name: str) -> None:
        """Read the secret from Secrets Manager past the cache's age (the cache keeps what was read): a value
        rotated a moment ago is what :meth:`secret` gives next. Given values (:meth:`from_values`) stay as given."""
        self._value(source, name, fresh=True)

    def _value(self, source: Source, name: str, *, fresh: bool) -> str:
        if self._read is None:
            raise CredentialsError(f"source '{source.name}': auth needs Secrets Manager, but no client was given")
        try:
            return self._read(name, fresh)
        except CredentialsError as exc:
            raise CredentialsError(f"source '{source.name}': {exc}") from None
        except RetryableError as exc:
            raise RetryableError(f"source '{source.name}': {exc}") from exc


class _ManagedSecrets:
    """Secrets read through Powertools' cached ``SecretsProvider`` of ``client``, made at the first read: its module
    imports boto3 (~0.2 s), which a run whose sources have no secret never needs."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._provider: Any = None
        self._lock = threading.Lock()

    def read(self, name: str, fresh: bool = False) -> str:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        with self._lock:
            if self._provider is None:
                self._provider = SecretsProvider(boto3_client=self._client)
        try:
            value = self._provider.get(name, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=fresh)
        except GetParameterError as exc:  # Secrets Manager's own error: the secret's name, never its value
            raise RetryableError(f"could not read secret {name!r}: {exc}") from exc
        return value if isinstance(value, str) else ""


def _token_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


class SourceCredentials:
    """The credentials of one source's requests, read from its secret at each attempt (through the cache)."""

    def __init__(self, source: Source, store: CredentialStore) -> None:
        self.source = source
        self._store = store
        auth = source.auth
        self._query_names = [auth.name] if isinstance(auth, ApiKeyAuth) and auth.location == "query" else []

    def __repr__(self) -> str:
        return f"SourceCredentials(source={self.source.name!r}, auth={self.source.auth.type!r})"

    def current(self) -> Credentials:
        auth, secret, source = self.source.auth, self._store.secret, self.source
        if isinstance(auth, ApiKeyAuth):
            key = secret(source, auth.secret_name, auth.secret_field)
            if auth.location == "header":
                return Credentials(headers={auth.name: key})
            return Credentials(params={auth.name: key})
        if isinstance(auth, BearerAuth):
            return _bearer(secret(source, auth.secret_name, auth.secret_field))
        if isinstance(auth, HttpBasicAuth):
            username = secret(source, auth.secret_name, auth.username_field)
            password = secret(source, auth.secret_name, auth.password_field, empty_ok=True)
            if ":" in username:  # RFC 7617: the first colon ends the user-id
                raise CredentialsError(
                    f"source '{source.name}': secret {auth.secret_name!r}: field {auth.username_field!r} "
                    "has a colon, which HTTP basic cannot carry in a username"
                )
            pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            return Credentials(headers={"Authorization": f"Basic {pair}"})
        if isinstance(auth, HeadersFromSecretAuth):
            fields = auth.headers.items()
            return Credentials(headers={name: secret(source, auth.secret_name, key) for name, key in fields})
        if isinstance(auth, OAuth2ClientCredentialsAuth):
            return _bearer(self._store.tokens.token(self._token_request(auth)))
        return Credentials()

    def renew(self, rejected: Credentials) -> bool:
        """After a 401 to ``rejected``: the secret read again past the cache (one read); an OAuth2 token dropped
        (the next one asked for with the secret as it is now), worth one more attempt; a static secret worth one
        only when what it gives changed (rotated since it was cached), else no second request."""
        auth = self.source.auth
        if isinstance(auth, OAuth2ClientCredentialsAuth):
            token = rejected.headers.get("Authorization", "").removeprefix("Bearer ")
            self._store.tokens.invalidate(self._token_request(auth), token)
            self._store.refresh(self.source, auth.secret_name)
            return True
        secret_name = getattr(auth, "secret_name", None)
        if secret_name is None:
            return False
        self._store.refresh(self.source, secret_name)
        return self.current() != rejected

    def redact(self, url: str) -> str:
        return _redact(url, dict.fromkeys(self._query_names, ""))

    def strip(self, url: str) -> str:
        return _replace_params(url, dict.fromkeys(self._query_names))

    def _token_request(self, auth: OAuth2ClientCredentialsAuth) -> TokenRequest:
        from apilake.oauth2 import TokenRequest  # an OAuth2 source's: imported with the container's tokens

        secret = self._store.secret
        return TokenRequest(
            source=self.source.name,
            auth=auth,
            client_id=secret(self.source, auth.secret_name, auth.client_id_field),
            client_secret=secret(self.source, auth.secret_name, auth.client_secret_field),
            timeouts=(self.source.timeouts.connect_seconds, self.source.timeouts.read_seconds),
        )


def _bearer(token: str) -> Credentials:
    return Credentials(headers={"Authorization": f"Bearer {token}"})
