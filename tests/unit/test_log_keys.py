"""The worker's log keys (source, page, message id...) are its thread's: `apilake ingest` runs batches in threads of
one process, each thread's logs carry its own page's keys; a Lambda's invocation starts without the last one's."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from apilake.http import Deadline
from apilake.observability import logger
from apilake.pagination import PageRequest, VendorPage
from apilake_dev.local.event_source import LambdaContextStub
from tests.unit.fakes import FakeVendor, Worker, document, item


class TogetherVendor(FakeVendor):
    """Answers only once every thread has asked: each thread has set its page's keys before any logs its page."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def fetch(self, request: PageRequest, deadline: Deadline) -> VendorPage:
        self.barrier.wait(timeout=10)
        return super().fetch(request, deadline)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The logger's JSON lines while the test runs."""
    stream = io.StringIO()
    handler = logger.registered_handler
    previous = getattr(handler, "stream", None)
    handler.setStream(stream)  # type: ignore[attr-defined]
    level = logger.log_level
    logger.setLevel("INFO")
    try:
        yield stream
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]
        logger.setLevel(level)
        logger.thread_safe_clear_keys()


def lines(stream: io.StringIO, message: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in found if line.get("message") == message]


def test_two_threads_log_each_its_own_pages_keys(logs: io.StringIO) -> None:
    # Given two workers in two threads, each landing one page, whose vendor answers once both have asked
    barrier = threading.Barrier(2)
    workers = {page: Worker("fan", vendor=TogetherVendor(barrier)) for page in (1, 2)}
    for page, worker in workers.items():
        worker.vendor.answer(f"page={page}", document(page))
    failed: dict[int, list[int]] = {}

    def land(page: int) -> None:
        failed[page] = workers[page].run(item("fan", page))

    threads = [threading.Thread(target=land, args=(page,)) for page in workers]
    # When both run at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    # Then each page landed, and the line that says so carries that page's keys, not the other thread's
    assert failed == {1: [], 2: []}
    landed = lines(logs, "page landed")
    assert sorted((line["page"], line["key"].rsplit("/", 1)[1]) for line in landed) == [
        (1, "page=00001.json.gz"),
        (2, "page=00002.json.gz"),
    ]
    assert all(line["source"] == "fan" and line["message_id"] == "m0" for line in landed)


def test_a_lambda_invocation_starts_without_the_last_ones_page_keys(logs: io.StringIO) -> None:
    # Given a page handled in this thread (a Lambda's invocation)
    worker = Worker("fan")
    worker.vendor.answer("page=3", document(3))
    assert worker.run(item("fan", 3)) == []

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> None:
        logger.info("next invocation")

    # When the next invocation logs before it handles a page
    handler({}, LambdaContextStub("worker", 60))
    # Then its line carries none of the last page's keys
    (line,) = lines(logs, "next invocation")
    assert not {"page", "shard", "message_id", "run_id"} & set(line)
