"""SQS partial batch responses (apilake.batch): each record validated and handled alone."""

from __future__ import annotations

import json
import logging
from datetime import date

import pytest

from apilake.batch import process_batch
from apilake.messages import WorkItem, WorkItemRecord
from tests.unit.fakes import sqs_record

LOG = logging.getLogger("apilake-test-batch")


def item(page: int) -> WorkItem:
    return WorkItem(run_id="r1", source="api-a", ingestion_date=date(2026, 1, 2), shard="all", page=page)


def not_a_work_item(message_id: str) -> dict[str, object]:
    return {**sqs_record(message_id, item(1)), "body": json.dumps({"page": "one"})}


def not_from_sqs(message_id: str) -> dict[str, object]:
    return {**sqs_record(message_id, item(1)), "eventSource": "aws:kinesis"}


def handle(record: WorkItemRecord) -> str:
    if record.body.page == 3:
        raise RuntimeError("page 3 cannot be had")
    return "landed"


@pytest.mark.parametrize(
    ("records", "failed"),
    [
        ([sqs_record("m1", item(1)), sqs_record("m2", item(2))], []),
        ([sqs_record("m1", item(1)), not_a_work_item("m2"), sqs_record("m3", item(2))], ["m2"]),
        ([not_from_sqs("m1"), sqs_record("m2", item(2))], ["m1"]),
        ([sqs_record("m1", item(3)), sqs_record("m2", item(1))], ["m1"]),
        ([not_a_work_item("m1"), sqs_record("m2", item(3))], ["m1", "m2"]),
        ([], []),
    ],
    ids=["all land", "a bad body", "not from SQS", "a raising handler", "all fail", "empty"],
)
def test_each_record_fails_alone_and_the_failed_ones_are_named(
    records: list[dict[str, object]], failed: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch, When it is processed
    response = process_batch({"Records": records}, WorkItemRecord, handle, LOG)
    # Then the records that failed are named (a batch whose every record failed too, never raised) ...
    assert response == {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
    # ... each logged with its traceback
    warnings = [r for r in caplog.records if r.name == LOG.name and r.levelno == logging.WARNING]
    assert len(warnings) == len(failed)
    assert all(r.exc_info is not None for r in warnings)


@pytest.mark.parametrize("event", [{}, {"Records": "m1"}, {"records": []}])
def test_an_event_that_is_no_sqs_batch_is_refused(event: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not an SQS batch event"):
        process_batch(event, WorkItemRecord, handle, LOG)
