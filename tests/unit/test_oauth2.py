"""OAuth2 client credentials: the token request as sent, the token endpoint's answers read (or refused without
quoting them), and the per-container token cache (expiry, margin, a rejected token, threads) on a fake clock."""

from __future__ import annotations

import base64
import threading
import time
import traceback
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from apilake import USER_AGENT, http
from apilake.auth_config import OAuth2ClientCredentialsAuth
from apilake.exceptions import BadResponseError, CredentialsError, PermanentError, TransientHttpError
from apilake.oauth2 import DEFAULT_LIFETIME_SECONDS, IssuedToken, TokenCache, TokenRequest, request_token
from tests.unit.test_http import StubSession, response

SECRET = "cl13nt-s3cr3t-9f2e"
TOKEN = "at-9d8c7b6a-token"
TOKEN_URL = "https://auth.example.com/oauth/token"


def auth(**overrides: Any) -> OAuth2ClientCredentialsAuth:
    raw = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "secret_name": "apilake/x", **overrides}
    return OAuth2ClientCredentialsAuth.model_validate(raw)


def token_request(client_id: str = "my-client", **overrides: Any) -> TokenRequest:
    return TokenRequest("api-x", auth(**overrides), client_id, SECRET, (2.0, 5.0))


class RecordingSession(StubSession):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        answer = super().send(request, **kwargs)
        body = request.body if isinstance(request.body, str) else (request.body or b"").decode()
        self.calls[-1]["form"] = {name: values[0] for name, values in parse_qs(body).items()}
        self.calls[-1]["method"] = request.method
        return answer


def test_the_token_request_is_a_form_post_with_the_client_in_the_body() -> None:
    # Given a source asking for two scopes and an audience, its client authenticated in the body (the default)
    session = RecordingSession(response(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 120}))
    # When a token is asked for
    issued = request_token(session, token_request(scopes=["read:a", "read:b"], token_params={"audience": "api"}))
    # Then the form says so, sent without redirects, with the source's timeouts
    assert (issued.access_token, issued.lifetime) == (TOKEN, 120.0)
    call = session.calls[0]
    assert (call["method"], call["url"], call["allow_redirects"], call["timeout"]) == ("POST", TOKEN_URL, False, (2, 5))
    assert call["form"] == {
        "grant_type": "client_credentials",
        "scope": "read:a read:b",
        "audience": "api",
        "client_id": "my-client",
        "client_secret": SECRET,
    }
    assert call["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in call["headers"]


def test_with_client_auth_basic_the_client_goes_in_an_authorization_header_form_encoded() -> None:
    session = RecordingSession(response(200, {"access_token": TOKEN, "token_type": "bearer"}))
    request_token(session, token_request("id with:colon", client_auth="basic"))
    call = session.calls[0]
    assert call["form"] == {"grant_type": "client_credentials"}
    sent = base64.b64decode(call["headers"]["Authorization"].removeprefix("Basic ")).decode()
    assert sent == f"id+with%3Acolon:{SECRET}"  # RFC 6749 2.3.1: form-urlencoded, then basic


def test_zooms_account_credentials_grant_sends_its_account_id() -> None:
    # Given Zoom's server-to-server OAuth: grant_type account_credentials, the account id a token param, basic client
    session = RecordingSession(response(200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 3599}))
    request = token_request(
        grant_type="account_credentials", token_params={"account_id": "AbC123"}, client_auth="basic"
    )
    # When a token is asked for
    request_token(session, request)
    # Then the form carries that grant and the account id, the client in the Authorization header
    assert session.calls[0]["form"] == {"grant_type": "account_credentials", "account_id": "AbC123"}
    assert session.calls[0]["headers"]["Authorization"].startswith("Basic ")


def test_the_token_request_says_it_is_apilake() -> None:
    session = RecordingSession(response(200, {"access_token": TOKEN}))
    request_token(session, token_request())
    assert session.calls[0]["headers"]["User-Agent"] == USER_AGENT == http.USER_AGENT


def test_the_grant_is_part_of_the_tokens_key() -> None:
    zoom = {"account_id": "a"}
    assert (
        token_request(token_params=zoom).key != token_request(grant_type="account_credentials", token_params=zoom).key
    )


@pytest.mark.parametrize(
    ("answer", "lifetime"),
    [
        ({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 90}, 90.0),
        ({"access_token": TOKEN, "token_type": "bearer", "expires_in": 0.5}, 0.5),
        ({"access_token": TOKEN, "token_type": "BEARER", "expires_in": "3599"}, 3599.0),
        ({"access_token": TOKEN, "token_type": "Bearer"}, DEFAULT_LIFETIME_SECONDS),
        ({"access_token": TOKEN, "expires_in": 60}, 60.0),
    ],
    ids=["Bearer", "fraction", "as text", "no expires_in", "no token_type"],
)
def test_a_token_answer_is_read(answer: dict[str, Any], lifetime: float) -> None:
    issued = request_token(StubSession(response(200, answer)), token_request())
    assert (issued.access_token, issued.lifetime) == (TOKEN, lifetime)
    assert TOKEN not in repr(issued)


WHERE = f"source 'api-x': token endpoint {TOKEN_URL}"


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (
            response(401, {"error": "invalid_client", "error_description": f"bad secret {SECRET}\n!"}),
            CredentialsError,
            f"{WHERE}: refused the client credentials of secret 'apilake/x': 401: invalid_client (bad secret *** !)",
        ),
        (
            response(400, {"error": "invalid_scope"}),
            CredentialsError,
            f"{WHERE}: refused the client credentials of secret 'apilake/x': 400: invalid_scope",
        ),
        (
            response(404, raw=b"<html>not found</html>"),
            CredentialsError,
            f"{WHERE}: refused the client credentials of secret 'apilake/x': 404",
        ),
        (
            response(302, headers={"Location": "https://elsewhere.example.com/"}),
            CredentialsError,
            f"{WHERE}: answered 302 (a redirect): give the token endpoint's own URL",
        ),
        (response(503), TransientHttpError, f"{WHERE}: answered 503"),
        (response(429, headers={"Retry-After": "7"}), TransientHttpError, f"{WHERE}: answered 429"),
        (
            response(200, raw=f"access_token={TOKEN}&token_type=bearer".encode(), headers={"Content-Type": "text/x"}),
            BadResponseError,
            f"{WHERE}: its answer is not a JSON object (200, text/x, ",
        ),
        (
            response(200, [TOKEN]),
            BadResponseError,
            f"{WHERE}: its answer is not a JSON object (200, no content type, ",
        ),
        (
            response(200, {"access_token": "", "token": TOKEN}),
            BadResponseError,
            f"{WHERE}: its answer has no access_token (a non-empty string) (200, no content type, ",
        ),
        (
            response(200, {"access_token": f"{TOKEN}\r\nX-Evil: 1"}),
            BadResponseError,
            f"{WHERE}: its answer has no access_token (a non-empty string)",
        ),
        (
            response(200, {"access_token": TOKEN, "token_type": "mac"}),
            BadResponseError,
            f"{WHERE}: issued a token of type 'mac', not a bearer token (RFC 6750)",
        ),
        (
            response(200, {"access_token": TOKEN, "expires_in": -5}),
            BadResponseError,
            f"{WHERE}: its answer's expires_in is not a positive number of seconds",
        ),
        (
            response(200, {"access_token": TOKEN, "expires_in": "soon"}),
            BadResponseError,
            f"{WHERE}: its answer's expires_in is not a positive number of seconds",
        ),
        (requests.ConnectionError(f"refused, {SECRET}"), TransientHttpError, f"{WHERE}: connection error"),
        (requests.ReadTimeout(f"read {SECRET}"), TransientHttpError, f"{WHERE}: timed out"),
        (requests.exceptions.InvalidHeader(SECRET), PermanentError, f"{WHERE}: the token request could not be made"),
    ],
    ids=[
        "401 invalid_client",
        "400 invalid_scope",
        "404 html",
        "redirect",
        "503",
        "429",
        "form-encoded",
        "a list",
        "empty token",
        "a token with a line break",
        "mac token",
        "negative expiry",
        "expiry as words",
        "connection refused",
        "timeout",
        "invalid header",
    ],
)
def test_a_token_endpoint_failure_is_retryable_or_permanent_and_never_quotes_a_secret(
    answer: requests.Response | Exception, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        request_token(StubSession(answer), token_request())
    assert str(raised.value).startswith(message)
    # The token and the client secret are in no text of the error, nor of what it was raised from
    shown = "".join(traceback.format_exception(raised.value))
    assert TOKEN not in shown and SECRET not in shown


def test_a_429_from_the_token_endpoint_carries_its_retry_after() -> None:
    with pytest.raises(TransientHttpError) as raised:
        request_token(StubSession(response(429, headers={"Retry-After": "7"})), token_request())
    assert (raised.value.status, raised.value.retry_after) == (429, 7.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A token endpoint that issues tok-1, tok-2, ... lasting ``lifetime`` seconds, and counts the requests."""

    def __init__(self, lifetime: float = 300.0, pause: float = 0.0) -> None:
        self.lifetime, self.pause, self.issued = lifetime, pause, 0
        self.lock = threading.Lock()

    def __call__(self, request: TokenRequest) -> IssuedToken:
        time.sleep(self.pause)
        with self.lock:
            self.issued += 1
            return IssuedToken(f"tok-{self.issued}-{request.client_id}", self.lifetime)


@pytest.mark.parametrize(
    ("lifetime", "margin", "reused_until"),
    [(300.0, 60, 240.0), (300.0, 0, 300.0), (30.0, 60, 15.0), (3600.0, 600, 3000.0)],
    ids=["margin", "no margin", "short-lived: half its life", "hour"],
)
def test_a_token_is_kept_until_the_margin_before_it_expires(
    lifetime: float, margin: float, reused_until: float
) -> None:
    # Given a token endpoint issuing tokens that last ``lifetime`` seconds
    clock, issuer = Clock(), Issuer(lifetime)
    cache = TokenCache(issuer, clock=clock)
    request = token_request(refresh_margin_seconds=margin)
    # When the token is asked for up to just before the margin, then at it
    first = cache.token(request)
    clock.now += reused_until - 0.001
    kept = cache.token(request)
    clock.now += 0.001
    renewed = cache.token(request)
    # Then the first token serves until then, and a new one after
    assert (first, kept, renewed) == ("tok-1-my-client", "tok-1-my-client", "tok-2-my-client")
    assert issuer.issued == 2


def test_a_rejected_token_is_dropped_but_not_a_token_that_replaced_it() -> None:
    clock, issuer = Clock(), Issuer()
    cache = TokenCache(issuer, clock=clock)
    request = token_request()
    first = cache.token(request)
    # When the API rejects the token: the next call fetches a new one
    cache.invalidate(request, first)
    second = cache.token(request)
    # And when another thread reports the first one again, late: the new token stays
    cache.invalidate(request, first)
    assert (first, second, cache.token(request), issuer.issued) == ("tok-1-my-client", "tok-2-my-client", second, 2)


def test_a_failed_token_request_is_not_kept() -> None:
    outcomes: list[Exception | IssuedToken] = [TransientHttpError("503"), IssuedToken("tok", 60.0)]

    def fetch(request: TokenRequest) -> IssuedToken:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cache = TokenCache(fetch, clock=Clock())
    with pytest.raises(TransientHttpError):
        cache.token(token_request())
    assert cache.token(token_request()) == "tok"


def test_each_client_and_each_token_shape_has_its_own_token() -> None:
    cache = TokenCache(Issuer(), clock=Clock())
    tokens = {
        cache.token(token_request("a")),
        cache.token(token_request("b")),
        cache.token(token_request("a", scopes=["x"])),
        cache.token(token_request("a")),
    }
    assert tokens == {"tok-1-a", "tok-2-b", "tok-3-a"}


def test_threads_needing_a_token_at_once_share_one_request() -> None:
    # Given a slow token endpoint and eight threads that need the same client's token at the same moment
    issuer = Issuer(pause=0.05)
    cache = TokenCache(issuer)
    start, got = threading.Barrier(8), []

    def work() -> None:
        start.wait()
        got.append(cache.token(token_request()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one token was asked for, and all of them use it
    assert issuer.issued == 1 and got == ["tok-1-my-client"] * 8
