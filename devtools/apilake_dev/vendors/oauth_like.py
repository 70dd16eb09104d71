"""A fake vendor behind the auth kinds real APIs use: OAuth2 client credentials (a token endpoint whose tokens
expire in the middle of a run), HTTP basic, and several headers from one secret.

- ``POST /oauth/token`` (RFC 6749 4.4, as Auth0's ``/oauth/token``): ``grant_type=client_credentials``, the client
  in the form (``client_id``, ``client_secret``) or an ``Authorization: Basic`` header, an ``audience`` when the
  vendor wants one; answers ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``. A token stops
  working after ``token_uses`` API requests (expired early, as a revoked one) or ``token_seconds`` seconds
  (what ``expires_in`` says); the API answers 401 ``invalid_token`` to it from then on.
- The datasets of ``protection`` need their kind of auth: ``oauth2`` (a live token), ``basic`` (the username and
  password), ``headers`` (each of ``secret_headers`` with its value); the others are open. Otherwise the
  fake vendor's usual endpoints (``/page_number/<ds>``, ``/cursor/<ds>``, ...).
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, override
from urllib.parse import parse_qs, unquote_plus, urlsplit

from apilake_dev.vendors import fake
from apilake_dev.vendors.fake import Dataset, FakeVendor

TOKEN_PATH = "/oauth/token"
Protection = Literal["oauth2", "basic", "headers"]


@dataclass
class _Token:
    uses: int = 0
    expires_at: float = 0.0


@dataclass
class AuthState:
    """The vendor's clients and what happened: tokens issued, token requests (the forms, and how the client
    authenticated), 401s answered per reason."""

    client_id: str = "client-1"
    client_secret: str = "client-secret"
    token_uses: int | None = None
    token_seconds: float = 3600.0
    audience: str | None = None
    basic: tuple[str, str] = ("user", "password")
    secret_headers: dict[str, str] = field(default_factory=dict)
    protection: dict[str, Protection] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def issued(self) -> list[str]:
        with self.lock:
            return list(self.tokens)

    def issue(self, form: dict[str, str], client: tuple[str, str] | None, how: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and answer to ``form`` from ``client`` (id, secret)."""
        with self.lock:
            self.token_requests.append({**form, "client_auth": how})
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if client != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        if self.audience is not None and form.get("audience") != self.audience:
            return 403, {"error": "access_denied", "error_description": f"Service not enabled: {form.get('audience')}"}
        with self.lock:
            value = f"tok-{len(self.tokens) + 1}-{secrets.token_hex(8)}"
            self.tokens[value] = _Token(expires_at=time.monotonic() + self.token_seconds)
        answer: dict[str, Any] = {"access_token": value, "token_type": "Bearer", "expires_in": self.token_seconds}
        if "scope" in form:
            answer["scope"] = form["scope"]
        return 200, answer

    def admits(self, dataset: str, headers: Any) -> str | None:
        """None when the request's headers carry what ``dataset`` needs; else why not."""
        kind = self.protection.get(dataset)
        if kind == "oauth2":
            scheme, _, value = headers.get("Authorization", "").partition(" ")
            with self.lock:
                token = self.tokens.get(value) if scheme.lower() == "bearer" else None
                if token is None:
                    return "unknown token"
                if time.monotonic() >= token.expires_at:
                    return "expired token"
                if self.token_uses is not None and token.uses >= self.token_uses:
                    return "used-up token"
                token.uses += 1
            return None
        if kind == "basic":
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            return None if headers.get("Authorization") == f"Basic {expected}" else "wrong basic credentials"
        if kind == "headers":
            wrong = [name for name, value in self.secret_headers.items() if headers.get(name) != value]
            return f"wrong {', '.join(wrong)}" if wrong else None
        return None


class _Handler(fake._Handler):
    auth: ClassVar[AuthState]

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name for it
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if urlsplit(self.path).path != TOKEN_PATH:
            return self._json(404, {"error": f"no such endpoint {self.path}"})
        form = {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}
        client, how = _client(form, self.headers.get("Authorization", ""))
        form.pop("client_secret", None)
        status, answer = self.auth.issue(form, client, how)
        self._json(status, answer, {"Cache-Control": "no-store"})

    @override
    def do_GET(self) -> None:
        segments = [s for s in urlsplit(self.path).path.split("/") if s]
        refused = self.auth.admits(segments[1], self.headers) if len(segments) == 2 else None
        if refused is None:
            return super().do_GET()
        with self.auth.lock:
            self.auth.rejected[refused] += 1
        kind = self.auth.protection[segments[1]]
        challenge = 'Bearer error="invalid_token"' if kind == "oauth2" else 'Basic realm="fake"'
        return self._json(
            401, {"error": "invalid_token" if kind == "oauth2" else refused}, {"WWW-Authenticate": challenge}
        )


def _client(form: dict[str, str], authorization: str) -> tuple[tuple[str, str] | None, str]:
    """The client's (id, secret) and how it was sent: an Authorization: Basic header, or the form."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        user, colon, password = base64.b64decode(value).decode().partition(":")
        return ((unquote_plus(user), unquote_plus(password)) if colon else None), "basic"
    if "client_id" in form:
        return (form["client_id"], form.get("client_secret", "")), "body"
    return None, "none"


class OAuthLikeVendor(FakeVendor):
    """The fake vendor, with a token endpoint and the datasets of ``state.protection`` behind their auth."""

    def __init__(self, datasets: list[Dataset], auth: AuthState, **options: Any) -> None:
        super().__init__(datasets, **options)
        self.auth = auth
        self._server.RequestHandlerClass = type("Handler", (_Handler,), {"auth": auth})

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH
