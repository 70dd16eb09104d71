"""Worker Lambda: lands the pages of one source's queue (SQS event source, partial batch responses)."""

import gc
import os

# Set before the imports build pydantic's models: the layer ships no pydantic plugin, so pydantic need not read
# every installed distribution's metadata looking for one (about 2 ms of a cold start). The function's own
# environment wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
# What the imports below make lives as long as the container (modules, classes, pydantic's validators): a collection
# while they run only walks it, and so would every later full collection. None runs during them, and they are frozen
# after (gc.freeze: left out of every later collection). Decision 127.
gc.disable()
try:
    from typing import Any

    import boto3  # noqa: F401 - its clients are made in the first invoke: the module's import is the cold start's
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: F401 - as boto3: the first secret
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from botocore.config import Config  # noqa: F401 - as boto3

    from apilake.batch import BatchResponse
    from apilake.ingest import PageIngester
    from apilake.observability import logger, metrics, use_source
    from apilake.settings import WorkerSettings
finally:
    gc.freeze()
    gc.enable()


# PageIngester.process: each record alone (apilake.batch); a batch whose every record failed is still a partial
# response, so the messages come back one by one (and reach the DLQ one by one), never as a crash.
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    settings = WorkerSettings.from_env()
    logger.setLevel(settings.log_level)
    use_source(settings.source)
    return PageIngester.for_settings(settings).process(event, context)
