"""Planner Lambda: from the schedule (or by hand), enumerates the run's pages and fans them out."""

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

    from apilake.http import Deadline
    from apilake.observability import logger
    from apilake.planner import Planner, parse_planner_event
    from apilake.settings import PlannerSettings
finally:
    gc.freeze()
    gc.enable()


# Metrics: the planner counts per source (messages_enqueued_total), each as a document of its own.
@logger.inject_lambda_context(clear_state=True, log_event=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = PlannerSettings.from_env()
    logger.setLevel(settings.log_level)
    request = parse_planner_event(event)
    logger.append_keys(run_id=request.run_id)
    summary = Planner.for_settings(settings).plan(request, Deadline(context.get_remaining_time_in_millis, 10.0))
    return summary.as_dict()
