"""OAuth2 client credentials (RFC 6749 4.4): access tokens fetched from a token endpoint, kept per container.

A token is asked for with a form POST (``grant_type=client_credentials``, or Zoom's ``account_credentials``;
the scopes space-separated, the source's ``token_params``) with apilake's User-Agent, the client authenticated
by two form fields or HTTP basic (``client_auth``). It is kept until ``refresh_margin_seconds`` before it expires
(at most half its lifetime before: a token that lives less than twice the margin is still used for its first half),
or until the API refuses it (``invalidate``).
A token endpoint that gives no ``expires_in`` has its tokens kept :data:`DEFAULT_LIFETIME_SECONDS`.

Nothing the token endpoint answers with a token is ever quoted: an answer that cannot be used is described
by its status, content type, size and the fields it lacks. Its error answers (which hold no token) are quoted
by their ``error`` code and description, with the client secret blanked, cut to a few hundred characters.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import requests
import urllib3

from apilake import USER_AGENT
from apilake.auth_config import OAuth2ClientCredentialsAuth
from apilake.exceptions import BadResponseError, CredentialsError, PermanentError, TransientHttpError

DEFAULT_LIFETIME_SECONDS = 3600.0  # a token without expires_in: what most vendors issue (Spotify, Okta, Zoom)
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
MAX_QUOTED_CHARS = 300
RETRY_STATUSES = frozenset({408, 429})  # with every 5xx
_HTTP_LAYER_ERRORS = (OSError, ValueError, http.client.HTTPException, urllib3.exceptions.HTTPError)


@dataclass(frozen=True, repr=False)
class IssuedToken:
    """A token endpoint's answer: the access token and how long it lasts (seconds); ``repr`` hides the token."""

    access_token: str
    lifetime: float

    def __repr__(self) -> str:
        return f"IssuedToken(lifetime={self.lifetime:g})"


@dataclass(frozen=True, repr=False)
class TokenRequest:
    """What one token request needs; ``repr`` shows neither the client id nor the secret."""

    source: str
    auth: OAuth2ClientCredentialsAuth
    client_id: str
    client_secret: str
    timeouts: tuple[float, float]  # connect, read (seconds)

    def __repr__(self) -> str:
        return f"TokenRequest(source={self.source!r}, token_url={self.auth.token_url!r})"

    @property
    def key(self) -> tuple[str, ...]:
        """Sources that ask the same endpoint for the same token with the same client, read from the same secret,
        share one token: the key holds the secret's name and a SHA-256 of the client id and secret (never the
        secret itself), so a source whose secret differs (a wrong or rotated one) never uses another's token."""
        client = json.dumps([self.client_id, self.client_secret]).encode()  # no two pairs give the same text
        return (*self.auth.token_key, self.auth.secret_name, hashlib.sha256(client).hexdigest())

    def where(self) -> str:
        return f"source '{self.source}': token endpoint {self.auth.token_url}"


def request_token(session: requests.Session, request: TokenRequest) -> IssuedToken:
    """A new access token from the token endpoint; TransientHttpError when asking again later may help."""
    auth = request.auth
    form: dict[str, str] = {"grant_type": auth.grant_type}
    if auth.scopes:
        form["scope"] = " ".join(auth.scopes)
    form.update(auth.token_params)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if auth.client_auth == "basic":  # RFC 6749 2.3.1: each form-urlencoded, then basic
        pair = f"{quote_plus(request.client_id)}:{quote_plus(request.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form.update(client_id=request.client_id, client_secret=request.client_secret)
    try:
        response = session.post(
            auth.token_url, data=form, headers=headers, timeout=request.timeouts, allow_redirects=False, stream=True
        )
        with response:
            body = _read_capped(response, request)
    except _HTTP_LAYER_ERRORS as exc:  # their texts are not kept: they may quote what was sent
        raise _failure(exc, request) from None
    return _issued(response, body, request)


def _read_capped(response: requests.Response, request: TokenRequest) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_TOKEN_RESPONSE_BYTES:
            raise PermanentError(f"{request.where()}: its answer is over {MAX_TOKEN_RESPONSE_BYTES} bytes")
    return bytes(body)


def _failure(error: Exception, request: TokenRequest) -> TransientHttpError | PermanentError:
    kind = type(error).__name__
    if isinstance(error, requests.Timeout):
        return TransientHttpError(f"{request.where()}: timed out")
    if isinstance(error, requests.ConnectionError | requests.exceptions.ChunkedEncodingError) or not isinstance(
        error, requests.RequestException | ValueError
    ):
        return TransientHttpError(f"{request.where()}: connection error: {kind}")
    return PermanentError(f"{request.where()}: the token request could not be made: {kind}")


def _issued(response: requests.Response, body: bytes, request: TokenRequest) -> IssuedToken:
    status, where = response.status_code, request.where()
    if status >= 500 or status in RETRY_STATUSES:
        raise TransientHttpError(
            f"{where}: answered {status}", status=status, retry_after=_seconds(response.headers.get("Retry-After"))
        )
    if 300 <= status < 400:
        raise CredentialsError(f"{where}: answered {status} (a redirect): give the token endpoint's own URL")
    if status >= 400:
        raise CredentialsError(
            f"{where}: refused the client credentials of secret {request.auth.secret_name!r}: "
            f"{status}{_oauth_error(body, request)}"
        )
    shape = f"{status}, {response.headers.get('Content-Type', 'no content type')}, {len(body)} bytes"
    try:
        answer: Any = json.loads(body)
    except ValueError:  # the text of a JSON error quotes the document, which may hold the token
        raise BadResponseError(f"{where}: its answer is not a JSON object ({shape})") from None
    if not isinstance(answer, dict):
        raise BadResponseError(f"{where}: its answer is not a JSON object ({shape})")
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or not _printable(token):
        raise BadResponseError(f"{where}: its answer has no access_token (a non-empty string) ({shape})")
    token_type = answer.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = repr(token_type[:40]) if isinstance(token_type, str) else type(token_type).__name__
        raise BadResponseError(f"{where}: issued a token of type {shown}, not a bearer token (RFC 6750)")
    return IssuedToken(token, _lifetime(answer.get("expires_in"), where))


def _lifetime(expires_in: object, where: str) -> float:
    if expires_in is None:
        return DEFAULT_LIFETIME_SECONDS
    if isinstance(expires_in, str) and expires_in.strip().isdigit():  # some endpoints send "3600"
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**9:
        raise BadResponseError(f"{where}: its answer's expires_in is not a positive number of seconds")
    return float(expires_in)


def _seconds(value: str | None) -> float | None:
    return float(value) if value is not None and value.strip().isdigit() else None


def _oauth_error(body: bytes, request: TokenRequest) -> str:
    """``: invalid_client (Client authentication failed)`` from an error answer (RFC 6749 5.2), or nothing."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return ""
    text = answer["error"]
    if isinstance(answer.get("error_description"), str):
        text += f" ({answer['error_description']})"
    text = text.replace(request.client_secret, "***") if request.client_secret else text
    text = "".join(char if _printable(char) else " " for char in text)
    return ": " + (text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "...")


def _printable(text: str) -> bool:
    return not any(unicodedata.category(char) == "Cc" for char in text)


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None
    refresh_at: float = 0.0

    def __repr__(self) -> str:
        return f"_Entry(refresh_at={self.refresh_at})"


class TokenCache:
    """Access tokens by :attr:`TokenRequest.key`, shared by the threads of a container: while one thread
    fetches a key's token, the others that need it wait for that token instead of asking for their own."""

    def __init__(
        self,
        fetch: Callable[[TokenRequest], IssuedToken],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenCache({len(self._entries)} clients)"

    def token(self, request: TokenRequest) -> str:
        """The client's token: the one kept, until shortly before it expires; then a new one."""
        entry = self._entry(request.key)
        with entry.lock:
            if entry.token is not None and self._clock() < entry.refresh_at:
                return entry.token
            entry.token = None
            asked_at = self._clock()  # the lifetime counts from the question: the answer may be slow
            issued = self._fetch(request)
            margin = min(request.auth.refresh_margin_seconds, issued.lifetime / 2)
            entry.token, entry.refresh_at = issued.access_token, asked_at + issued.lifetime - margin
            return issued.access_token

    def invalidate(self, request: TokenRequest, rejected: str) -> None:
        """Forget the client's token if it is ``rejected`` (another thread may have replaced it already)."""
        entry = self._entry(request.key)
        with entry.lock:
            if entry.token == rejected:
                entry.token = None

    def _entry(self, key: tuple[str, ...]) -> _Entry:
        with self._lock:
            return self._entries.setdefault(key, _Entry())
