"""AWS clients and what else a Lambda container builds once and reuses across invocations.

Nothing here runs at import: handlers call these inside the invoke, and the results are cached
for the life of the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from apilake.auth import CredentialStore
from apilake.config import SourcesFile, load_sources
from apilake.http import VendorClients, new_session
from apilake.queue import QueueLocator

_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,
)


@dataclass(frozen=True)
class AwsClients:
    s3: Any
    sqs: Any
    secrets: Any

    @classmethod
    def create(cls, session: boto3.session.Session | None = None) -> AwsClients:
        session = session or boto3.session.Session()
        return cls(
            s3=session.client("s3", config=_CLIENT_CONFIG),
            sqs=session.client("sqs", config=_CLIENT_CONFIG),
            secrets=session.client("secretsmanager", config=_CLIENT_CONFIG),
        )


@cache
def default_clients() -> AwsClients:
    return AwsClients.create()


@cache
def cached_sources(path: str) -> SourcesFile:
    return load_sources(path)


@cache
def default_vendor_clients() -> VendorClients:
    return VendorClients(new_session(), CredentialStore(default_clients().secrets))


@cache
def default_queue_locator(stage: str) -> QueueLocator:
    """The queues of the stage's sources, each looked up once per container."""
    return QueueLocator(default_clients().sqs, stage)
