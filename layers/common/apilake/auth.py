"""Credentials: read a secret by name from Secrets Manager (cached), never log it.

A secret's value is stripped of surrounding whitespace (a secret made from a file keeps its last
newline) and refused if a control character is left in it: it goes into a header or a query
string, and the HTTP layer's own error for a bad header value quotes the value.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from apilake.config import ApiKeyAuth, BearerAuth, Source
from apilake.exceptions import CredentialsError, RetryableError

SECRET_MAX_AGE_SECONDS = 300


@dataclass(frozen=True, repr=False)
class Credentials:
    """Headers and query parameters to add to every request; ``repr`` never shows their values."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Credentials(headers={sorted(self.headers)}, params={sorted(self.params)})"

    def redact(self, url: str) -> str:
        """``url`` with the value of every credential query parameter replaced by ``***`` (the whole query,
        if the URL cannot be read)."""
        try:
            return _replace_params(url, dict.fromkeys(self.params, "***"))
        except ValueError:
            base, question, _ = url.partition("?")
            return base + question + ("***" if question else "")

    def strip(self, url: str) -> str:
        """``url`` without the credential query parameters (they are added again on each request)."""
        return _replace_params(url, dict.fromkeys(self.params))


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


class CredentialStore:
    """Resolves a source's auth into :class:`Credentials`, reading secrets through a cached provider."""

    def __init__(self, secrets_client: Any) -> None:
        self._provider = SecretsProvider(boto3_client=secrets_client) if secrets_client is not None else None

    def for_source(self, source: Source) -> Credentials:
        auth = source.auth
        if isinstance(auth, ApiKeyAuth):
            key = self._secret(source, auth.secret_name, auth.secret_field)
            if auth.location == "header":
                return Credentials(headers={auth.name: key})
            return Credentials(params={auth.name: key})
        if isinstance(auth, BearerAuth):
            token = self._secret(source, auth.secret_name, auth.secret_field)
            return Credentials(headers={"Authorization": f"Bearer {token}"})
        return Credentials()

    def _secret(self, source: Source, name: str, secret_field: str | None) -> str:
        if self._provider is None:
            raise CredentialsError(f"source '{source.name}': auth needs Secrets Manager, but no client was given")
        try:
            value = self._provider.get(name, max_age=SECRET_MAX_AGE_SECONDS)
        except GetParameterError as exc:  # Secrets Manager's own error: the secret's name, never its value
            raise RetryableError(f"source '{source.name}': could not read secret {name!r}: {exc}") from exc
        if not isinstance(value, str) or not value.strip():
            raise CredentialsError(f"source '{source.name}': secret {name!r} is empty or binary")
        if secret_field is not None:
            try:
                document = json.loads(value)
            except json.JSONDecodeError:
                raise CredentialsError(f"source '{source.name}': secret {name!r} is not a JSON object") from None
            value = document.get(secret_field) if isinstance(document, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise CredentialsError(f"source '{source.name}': secret {name!r} has no string field {secret_field!r}")
        value = value.strip()
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise CredentialsError(f"source '{source.name}': secret {name!r} has a control character in its value")
        return value
