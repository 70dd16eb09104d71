"""A limit on a whole response (status line, headers, body): requests' read timeout applies to each socket read, so a
vendor sending a byte a second would never trip it.

A :class:`ResponseDeadline` shuts down the socket the response arrives on when the response has not wholly arrived
by its deadline, so the read in progress ends at once, and ``expired`` says why it ended. The socket is found through
the session's connections (:class:`DeadlineAdapter`): once a request is sent, its connection hands itself to the
deadline of the request this thread is making.

The deadlines of a process are kept by one watchdog thread (a daemon, started with the first deadline): a heap of
deadlines in time order under a condition. Starting or cancelling a deadline is a push or a flag under that
condition; the thread sleeps until the earliest deadline still pending, and a cancelled deadline is dropped when the
thread reaches it, or at once when cancelled entries outnumber the pending ones.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter

_current = threading.local()  # .deadline: the ResponseDeadline of the request this thread is making
_COMPACT_ABOVE = 64  # cancelled entries kept in the heap at most, unless the pending ones are more


class ResponseDeadline:
    """Cuts a response off when it has not wholly arrived by a deadline, ``seconds`` after the block is entered."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.pending = False  # in the watchdog's heap, neither cancelled nor expired (changed under its condition)
        self._lock = threading.Lock()
        self._connection: urllib3.connection.HTTPConnection | None = None

    def __enter__(self) -> ResponseDeadline:
        _current.deadline = self
        _WATCHDOG.start(self, time.monotonic() + self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        _WATCHDOG.cancel(self)
        _current.deadline = None
        with self._lock:
            self._connection = None

    def watch(self, connection: urllib3.connection.HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self.expired:
                _shut_down(connection)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._connection is not None:
                _shut_down(self._connection)


class _Watchdog:
    """The thread that expires a process's deadlines at their time."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, ResponseDeadline]] = []  # (when, order of arrival, deadline)
        self._order = itertools.count()
        self._cancelled = 0  # entries of the heap whose deadline was cancelled
        self._thread: threading.Thread | None = None

    def start(self, deadline: ResponseDeadline, when: float) -> None:
        with self._condition:
            deadline.pending = True
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():  # the first deadline (or the first since a fork)
                self._thread = threading.Thread(target=self._run, name="apilake-response-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # sooner than what the thread sleeps until
                self._condition.notify()

    def cancel(self, deadline: ResponseDeadline) -> None:
        with self._condition:
            if not deadline.pending:  # expired already
                return
            deadline.pending = False
            self._cancelled += 1
            if self._cancelled > max(_COMPACT_ABOVE, len(self._heap) // 2):
                self._heap = [entry for entry in self._heap if entry[2].pending]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            for deadline in self._due():
                deadline.expire()  # outside the condition: a shutdown never holds up a start or a cancel

    def _due(self) -> list[ResponseDeadline]:
        """The deadlines whose time has come, once there is one (no longer pending: a cancel does nothing to them)."""
        with self._condition:
            while True:
                while self._heap and not self._heap[0][2].pending:  # cancelled: dropped
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._condition.wait()
                    continue
                now = time.monotonic()
                if self._heap[0][0] > now:
                    self._condition.wait(self._heap[0][0] - now)
                    continue
                due = []
                while self._heap and self._heap[0][0] <= now:
                    _, _, deadline = heapq.heappop(self._heap)
                    if deadline.pending:
                        deadline.pending = False
                        due.append(deadline)
                    else:
                        self._cancelled -= 1
                return due


_WATCHDOG = _Watchdog()


def _shut_down(connection: urllib3.connection.HTTPConnection) -> None:
    if connection.sock is not None:  # the socket's own shutdown, also for TLS (no TLS close from this thread)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)


def _watched(connection: urllib3.connection.HTTPConnection) -> None:
    deadline: ResponseDeadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watched(self)  # connected and sent: what comes back is under the deadline


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watched(self)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, whose connections can be cut off by a :class:`ResponseDeadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
