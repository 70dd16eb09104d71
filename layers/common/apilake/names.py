"""One name for each thing a source has, wherever it appears (template, AWS, Glue, DuckDB, docs).

A source called ``api-b`` has the queue ``apilake-<stage>-api-b`` (and ``...-dlq``), the template
resources ``ApiBQueue``, ``ApiBWorker``, ... and the table ``source_api_b`` in Glue, Athena and
DuckDB alike (the Glue crawler names a table after its folder, ``source=api-b``).
"""

from __future__ import annotations

import re

QUEUE_PREFIX = "apilake"


def pascal(source: str) -> str:
    """``api-b`` -> ``ApiB``: the prefix of the source's logical ids in template.yaml."""
    return "".join(part.capitalize() for part in re.split(r"[^a-z0-9]+", source.lower()) if part)


def logical_id(source: str, resource: str) -> str:
    """The template's logical id of one of a source's resources: ``logical_id("api-b", "Queue")`` -> ``ApiBQueue``."""
    return pascal(source) + resource


def queue_name(stage: str, source: str) -> str:
    """The SQS name of the source's work queue (the planner finds its URL by this name)."""
    return f"{QUEUE_PREFIX}-{stage}-{source}"


def dlq_name(stage: str, source: str) -> str:
    """The SQS name of the source's dead-letter queue."""
    return f"{queue_name(stage, source)}-dlq"


def table_name(source: str) -> str:
    """The source's table (Glue, Athena) and view (DuckDB): ``api-b`` -> ``source_api_b``."""
    return "source_" + re.sub(r"[^a-z0-9]+", "_", source.lower())
