"""Worker Lambda: lands the pages of one source's queue (SQS event source, partial batch responses)."""

from apilake import cold_start  # first: see its docstring

try:
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from apilake.batch import BatchResponse
    from apilake.ingest import PageIngester
    from apilake.observability import logger, metrics, use_source
    from apilake.settings import WorkerSettings
finally:
    cold_start.imported()


# PageIngester.process: each record alone (apilake.batch); a batch whose every record failed is still a partial
# response, so the messages come back one by one (and reach the DLQ one by one), never as a crash.
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    settings = WorkerSettings.from_env()
    logger.setLevel(settings.log_level)
    use_source(settings.source)
    return PageIngester.for_settings(settings).process(event, context)
