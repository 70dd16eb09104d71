"""The one-process runner's stand-ins (apilake.runner): an in-memory queue per source (with delayed items, as
SQS's delay and visibility), the planner's queue locator and sender, the ingesters' sender, the pacers of
the vendors' clients (one per source or budget group), and the SQS record and ingester a batch goes through."""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from apilake.config import Source
from apilake.exceptions import ConfigError, PermanentError
from apilake.ingest import PageIngester
from apilake.messages import WorkItem, WorkItemRecord
from apilake.queue import QueueLocator, QueueSender
from apilake.ratelimit import Pacer

QUEUE_SCHEME = "inprocess://"
# A Lambda's longest run: what each batch is told it has left (the ingester starts no wait past it).
BATCH_MILLIS = 900_000


def queue_url(source: str) -> str:
    return QUEUE_SCHEME + source


class BatchContext(LambdaContext):
    """What the ingester reads of a Lambda context: the time left (a fresh window for every batch)."""

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return BATCH_MILLIS


@dataclass(order=True)
class Delayed:
    due: float
    seq: int
    entry: Entry = field(compare=False)


_MESSAGE_IDS = itertools.count(1)


@dataclass
class Entry:
    item: WorkItem
    receives: int = 0
    message_id: str = field(default_factory=lambda: f"m-{os.getpid()}-{next(_MESSAGE_IDS)}")  # the parts' too


class WorkQueues:
    """An in-memory queue per source (one lock): items ready, items delayed until a time, and how many are not
    done yet (queued, delayed or in a batch). Each page is queued once (a chain's continuation sent again, or a
    planned page already queued, is dropped); a parked copy and a retry are queued whatever."""

    def __init__(self, sources: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, deque[Entry]] = {s: deque() for s in sources}
        self._delayed: dict[str, list[Delayed]] = {s: [] for s in sources}
        self._wakeup = {s: threading.Condition(self._lock) for s in sources}
        self._seen: set[tuple[str, str, str, int]] = set()
        self._seq = itertools.count()
        self.outstanding = 0
        self.queued: dict[str, int] = dict.fromkeys(sources, 0)
        self.stopped = False

    def offer(self, item: WorkItem, delay_seconds: float = 0) -> bool:
        page = (item.source, item.run_id, item.shard, item.page)
        with self._lock:
            if item.source not in self._ready:
                raise ConfigError(f"source '{item.source}': no queue in this run")
            if item.park is None and page in self._seen:
                return False
            self._seen.add(page)
            self.outstanding += 1
            self.queued[item.source] += 1
            self._put(Entry(item), delay_seconds)
            return True

    def retry(self, entry: Entry, delay_seconds: float) -> None:
        with self._lock:
            self._put(entry, delay_seconds)

    def _put(self, entry: Entry, delay_seconds: float) -> None:
        source = entry.item.source
        if delay_seconds > 0:
            heapq.heappush(self._delayed[source], Delayed(time.monotonic() + delay_seconds, next(self._seq), entry))
        else:
            self._ready[source].append(entry)
        self._wakeup[source].notify()

    def take(self, source: str, limit: int, workers: int) -> list[Entry] | None:
        """Up to ``limit`` items (fewer when the queue is short, so that every worker gets some); None once every
        queue is done (or the run stopped)."""
        ready, delayed = self._ready[source], self._delayed[source]
        with self._lock:
            while True:
                if self.stopped:
                    return None
                now = time.monotonic()
                while delayed and delayed[0].due <= now:
                    ready.append(heapq.heappop(delayed).entry)
                if ready:
                    count = min(limit, max(1, math.ceil(len(ready) / workers)))
                    taken = [ready.popleft() for _ in range(min(count, len(ready)))]
                    for entry in taken:
                        entry.receives += 1
                    return taken
                if self.outstanding == 0:
                    return None
                self._wakeup[source].wait(min(1.0, delayed[0].due - now) if delayed else 1.0)

    def done(self, count: int) -> None:
        with self._lock:
            self.outstanding -= count
            if self.outstanding <= 0:
                for wakeup in self._wakeup.values():
                    wakeup.notify_all()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for wakeup in self._wakeup.values():
                wakeup.notify_all()

    def delayed(self, source: str) -> int:
        with self._lock:
            return len(self._delayed[source])


class RunLocator(QueueLocator):
    """The planner's queues: one in memory per source of the run."""

    def __init__(self, sources: Sequence[str]) -> None:
        super().__init__(None, "local")
        self._names = set(sources)

    def url(self, source: str) -> str:
        if source not in self._names:
            raise ConfigError(f"source '{source}': not in this run")
        return queue_url(source)


class PlanCollector(QueueSender):
    """What the planner sends, kept: the run queues it once the ledger says what already landed."""

    def __init__(self) -> None:
        super().__init__(None)
        self.items: list[WorkItem] = []

    def send_all(self, queue_url: str, items: Sequence[WorkItem]) -> int:
        self.items.extend(items)
        return len(items)


class RunSender:
    """The ingesters' queue: continuations, parked copies (delayed), and a parent's children (whose source's
    workers start with its first item)."""

    def __init__(self, queues: WorkQueues, start: Callable[[str], None]) -> None:
        self._queues = queues
        self._start = start

    def send_one(self, queue_url: str, item: WorkItem, delay_seconds: int = 0) -> None:
        if self._queues.offer(item, delay_seconds):
            self._start(item.source)

    def send_all(self, queue_url: str, items: Sequence[WorkItem]) -> int:
        for item in items:
            self.send_one(queue_url, item)
        return len(items)


class RunPacers:
    """The pacers of one process's run (``VendorClients``' ``pacer_for``): one per source at its whole budget (the
    budget's per-worker share times the workers sharing it), however many threads the source has here, and one per
    budget group, shared by its sources. This process alone spends the vendor's quota: all of it (``shared_by=1``)."""

    def __init__(self) -> None:
        self._pacers: dict[str, Pacer] = {}
        self._lock = threading.Lock()

    def __call__(self, source: Source) -> Pacer:
        budget = source.budget
        key = f"group:{budget.group}" if budget.group is not None else f"source:{source.name}"
        with self._lock:
            if key not in self._pacers:
                share = budget.per_worker_rps
                self._pacers[key] = Pacer(share * budget.sharing_workers if share else None, shared_by=1)
            return self._pacers[key]


class RunIngester(PageIngester):
    """The worker's ingester, noting the pages of its batch that failed permanently (the runner's dead at once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.permanent: set[str] = set()

    def handle(self, record: WorkItemRecord, lambda_context: LambdaContext) -> str:
        try:
            return super().handle(record, lambda_context)
        except PermanentError:
            self.permanent.add(record.messageId)
            raise


def sqs_record(entry: Entry) -> dict[str, Any]:
    """The SQS record Lambda would hand the worker for ``entry``."""
    now = str(int(datetime.now(UTC).timestamp() * 1000))
    return {
        "messageId": entry.message_id,
        "receiptHandle": entry.message_id,
        "body": entry.item.model_dump_json(),
        "attributes": {
            "ApproximateReceiveCount": str(entry.receives),
            "SentTimestamp": now,
            "SenderId": "apilake-ingest",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {},
        "md5OfBody": "-",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:local:000000000000:{entry.item.source}",
        "awsRegion": "local",
    }
