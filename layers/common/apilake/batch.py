"""SQS partial batch responses (the event source mapping's ``ReportBatchItemFailures``): each record
validated and handled alone, the ids of those that failed returned, so that only they come back.

What Powertools' ``BatchProcessor`` with a model and ``raise_on_entire_batch_failure=False`` did for the
worker, without importing its batch utility (asyncio, every event source's data classes and parser models:
about a third of the worker's cold start). Decision 97 in docs/decisions.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from pydantic import BaseModel


class ItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    """What Lambda reads back: the records named here return to the queue, the others are deleted."""

    batchItemFailures: list[ItemFailure]


def process_batch[R: BaseModel](
    event: Mapping[str, Any], model: type[R], handler: Callable[[R], object], log: logging.Logger
) -> BatchResponse:
    """Each of the event's ``Records`` validated as ``model`` and given to ``handler``. A record that fails
    (its validation or its handler, whatever the exception) fails alone: logged with its traceback on ``log``
    and named in the response, and the batch goes on. A batch whose every record failed is a response too."""
    records = event.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an SQS batch event: it has no Records list")
    failures: list[ItemFailure] = []
    for raw in records:
        try:
            handler(model.model_validate(raw))
        except Exception:  # any failure of a record fails that record alone: logged, retried by SQS
            log.warning("Record processing exception; skipping this record", exc_info=True)
            failures.append({"itemIdentifier": str(raw["messageId"])})
    return {"batchItemFailures": failures}
