"""Planner Lambda: from the schedule (or by hand), enumerates the run's pages and fans them out."""

from apilake import cold_start  # first: see its docstring

try:
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from apilake.http import Deadline
    from apilake.observability import logger
    from apilake.planner import Planner, parse_planner_event
    from apilake.settings import PlannerSettings
finally:
    cold_start.imported()


# Metrics: the planner counts per source (messages_enqueued_total), each as a document of its own.
@logger.inject_lambda_context(clear_state=True, log_event=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = PlannerSettings.from_env()
    logger.setLevel(settings.log_level)
    request = parse_planner_event(event)
    logger.append_keys(run_id=request.run_id)
    summary = Planner.for_settings(settings).plan(request, Deadline(context.get_remaining_time_in_millis, 10.0))
    return summary.as_dict()
