"""What a handler's module imports first (decisions 124, 127, 130): the cold start's settings and the AWS libraries
every function uses, with no garbage collection until the handler's own imports are done (:func:`imported`).

- ``PYDANTIC_DISABLE_PLUGINS``: the layer ships no pydantic plugin, so pydantic need not read every installed
  distribution's metadata looking for one (about 2 ms). The function's own environment wins.
- The collector is off while the handler's modules import: what they make lives as long as the container (modules,
  classes, pydantic's validators), so a collection while they run only walks it. :func:`imported` freezes it (left
  out of every later collection) and turns the collector on again.
- boto3, botocore's client config and Powertools' secrets provider are imported here, at init, though the clients
  are made in the first invoke (apilake.aws, apilake.auth import them lazily, for `apilake ingest`'s sake): the cold
  start is where their cost is, and where `make bench` 4 counts it.
"""

import gc
import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
gc.disable()

import boto3  # noqa: E402, F401
from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: E402, F401
from botocore.config import Config  # noqa: E402, F401


def imported() -> None:
    """The handler's imports are done: what they made is frozen, and the collector is on again."""
    gc.freeze()
    gc.enable()
