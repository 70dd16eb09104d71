"""Completeness Lambda: on its schedule, judges each source's latest due scheduled run and emits the metrics
the incomplete-run alarms watch; keeps the reports of the judged runs and of the last 48 hours' runs current;
and drives the curated step (apilake.curation): Athena curates each of those runs complete for a source with
columns, and creates the views."""

from apilake import cold_start  # first: see its docstring

try:
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from apilake.completeness import CompletenessCheck, check_time
    from apilake.observability import logger, metrics
    from apilake.settings import CompletenessSettings
finally:
    cold_start.imported()


# Metrics: per source (run_complete, pages_missing, records_landed, schema_drift_fields, curation_failed) and for
# the stack, each a document of its own.
@logger.inject_lambda_context(clear_state=True, log_event=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = CompletenessSettings.from_env()
    logger.setLevel(settings.log_level)
    return CompletenessCheck.for_settings(settings).check(check_time(event)).as_dict()
