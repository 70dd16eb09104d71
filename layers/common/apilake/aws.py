"""AWS clients and what else a Lambda container builds once and reuses across invocations.

Nothing here runs at import: handlers call these inside the invoke, and the results are cached
for the life of the container.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache, update_wrapper
from typing import TYPE_CHECKING, Any, NamedTuple

from apilake.auth import CredentialStore
from apilake.config import SourcesFile, load_sources
from apilake.http import VendorClients, new_session
from apilake.queue import QueueLocator

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config


# boto3 and botocore's client machinery (~0.2 s) are imported by the clients' makers, not by this module: the
# handlers import boto3 themselves (their cold start is unchanged), and `apilake ingest` to a lake folder, which
# makes no AWS client, starts without them.
@cache
def client_config() -> Config:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30, max_pool_connections=32
    )


class per_container[**P, R]:  # noqa: N801 (a decorator, named like functools.cache)
    """:func:`functools.cache` keyed by the arguments with their defaults filled in, so that ``f()``,
    ``f(None)`` and ``f(endpoint_url=None)`` are one entry (one set of clients per container, not three)."""

    def __init__(self, build: Callable[P, R]) -> None:
        self._signature = inspect.signature(build)
        self._cached = cache(build)
        update_wrapper(self, build)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return self._cached(*bound.args, **bound.kwargs)

    def cache_clear(self) -> None:
        self._cached.cache_clear()


# A NamedTuple, not a frozen dataclass: as immutable, a tenth of the cost to create at import (the cold start).
class AwsClients(NamedTuple):
    s3: Any
    sqs: Any
    secrets: Any

    @classmethod
    def create(cls, session: boto3.session.Session | None = None, endpoint_url: str | None = None) -> AwsClients:
        """The clients of one session; ``endpoint_url`` sends every request there instead of AWS (the local
        stand-in under ``sam local invoke``: settings' ``aws_endpoint_url``)."""
        import boto3

        session = session or boto3.session.Session()
        config = client_config()
        return cls(
            s3=session.client("s3", config=config, endpoint_url=endpoint_url),
            sqs=session.client("sqs", config=config, endpoint_url=endpoint_url),
            secrets=session.client("secretsmanager", config=config, endpoint_url=endpoint_url),
        )


@per_container
def default_clients(endpoint_url: str | None = None) -> AwsClients:
    """The container's clients, one set per endpoint (None: AWS's own)."""
    return AwsClients.create(endpoint_url=endpoint_url)


@cache
def cached_sources(path: str) -> SourcesFile:
    """The function's sources file, read once a container (its validated copy, made by the layer's build)."""
    return load_sources(path, validated_copy=True)


@per_container
def default_vendor_clients(endpoint_url: str | None = None) -> VendorClients:
    """The vendors' HTTP clients, their secrets read through :func:`default_clients` of ``endpoint_url``."""
    return VendorClients(new_session(), CredentialStore(default_clients(endpoint_url).secrets))


@per_container
def default_queue_locator(stage: str, endpoint_url: str | None = None) -> QueueLocator:
    """The queues of the stage's sources, each looked up once per container."""
    return QueueLocator(default_clients(endpoint_url).sqs, stage)


@per_container
def default_athena_client(endpoint_url: str | None = None) -> Any:
    """The completeness check's Athena client (its curated step), one per endpoint; apart from the others so
    that no other function loads Athena's API model."""
    import boto3

    return boto3.session.Session().client("athena", config=client_config(), endpoint_url=endpoint_url)
