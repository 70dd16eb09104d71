"""Worker Lambda: lands the pages of one source's queue (SQS event source, partial batch responses)."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from apilake.ingest import PageIngester
from apilake.messages import WorkItemRecord
from apilake.observability import logger, metrics, std_logger, use_source
from apilake.settings import WorkerSettings

# raise_on_entire_batch_failure=False: a batch whose every record failed is still a partial
# response, so the messages come back one by one (and reach the DLQ one by one), never as a crash.
processor = BatchProcessor(
    event_type=EventType.SQS, model=WorkItemRecord, raise_on_entire_batch_failure=False, logger=std_logger
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    settings = WorkerSettings.from_env()
    logger.setLevel(settings.log_level)
    use_source(settings.source)
    return PageIngester.for_settings(settings).process(event, context, processor)
