"""A run's lease (apilake.runner): one process runs a run at a time, wherever the processes are (two Fargate tasks
started for one schedule firing, an operator's resume beside a live task).

The lease is one object of the ledger, ``ledger/runs/run=<R>/lease.json``: the holder (a random owner id, its host
and process id) and when it expires. The runner takes it before it plans or resumes, renews it while it runs
(every third of its lifetime) and releases it at its end; every write is conditional, so two processes never both
hold it:

- taken by a conditional create (``IfNoneMatch="*"``) when there is none;
- else taken over (``IfMatch`` its ETag) when it expired, was released, or its holder is a process of this host
  that is gone (a run killed with SIGKILL resumed at once on the same machine);
- renewed and released with ``IfMatch`` the ETag of its last write: a renewal refused means another process took
  the lease (this one stalled past its expiry), and the run stops.

A released lease is written expired rather than deleted: the task needs no delete right on it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from apilake.exceptions import ApilakeError
from apilake.ledger import LEDGER_PREFIX
from apilake.observability import logger

LEASE_SECONDS = 120.0
_REFUSED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey", "404")


class RunLeaseHeldError(ApilakeError):
    """Another process holds the run's lease."""


def lease_key(run_id: str) -> str:
    return f"{LEDGER_PREFIX}/runs/run={run_id}/lease.json"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _gone(holder: dict[str, Any]) -> bool:
    """True when the holder was a process of this host that no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = holder["pid"]
    if pid == os.getpid():
        return False  # this process: another runner of it holds the run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLease:
    """The lease of one run, held by this process between :meth:`acquire` and :meth:`release`."""

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        run_id: str,
        seconds: float = LEASE_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = s3_client
        self._bucket = bucket
        self.run_id = run_id
        self.key = lease_key(run_id)
        self.seconds = seconds
        self._clock = clock
        self.owner = uuid.uuid4().hex
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    def _document(self, expires: datetime) -> bytes:
        holder = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires_at": expires.isoformat(timespec="seconds"),
        }
        return json.dumps(holder).encode()

    def _put(self, expires: datetime, **condition: str) -> None:
        answer = self._client.put_object(
            Bucket=self._bucket,
            Key=self.key,
            Body=self._document(expires),
            ContentType="application/json",
            **condition,
        )
        self._etag = str(answer["ETag"])

    def acquire(self) -> None:
        """Take the lease, or raise :class:`RunLeaseHeldError` naming its holder and expiry."""
        expires = self._clock() + timedelta(seconds=self.seconds)
        try:
            self._put(expires, IfNoneMatch="*")
            return
        except ClientError as exc:
            if _code(exc) not in _REFUSED:
                raise
        answer = self._client.get_object(Bucket=self._bucket, Key=self.key)
        etag, holder = str(answer["ETag"]), json.loads(answer["Body"].read())
        held_until = datetime.fromisoformat(str(holder.get("expires_at")))
        if held_until > self._clock() and not _gone(holder):
            raise RunLeaseHeldError(
                f"run {self.run_id}: another process runs it (host {holder.get('host')}, pid {holder.get('pid')}; "
                f"its lease {self.key} expires at {held_until.isoformat()} unless renewed): not started twice. "
                "Wait for it to end, or, if it is gone, run again after that time"
            )
        try:
            self._put(expires, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) not in _REFUSED:
                raise
            raise RunLeaseHeldError(f"run {self.run_id}: another process took its lease {self.key} first") from None

    def renew(self) -> bool:
        """Extend the lease; False when another process took it (then this one must stop)."""
        if self._etag is None:
            return False
        try:
            self._put(self._clock() + timedelta(seconds=self.seconds), IfMatch=self._etag)
        except ClientError as exc:
            if _code(exc) in _REFUSED:
                self.lost = True
                return False
            logger.warning("could not renew the run's lease", extra={"key": self.key, "reason": str(exc)})
        except BotoCoreError as exc:
            logger.warning("could not renew the run's lease", extra={"key": self.key, "reason": str(exc)})
        return True

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew the lease every third of its lifetime in a thread, until :meth:`release`; ``on_lost`` when a
        renewal finds it taken."""

        def renew_until_released() -> None:
            while not self._stop.wait(self.seconds / 3):
                if not self.renew():
                    logger.error("the run's lease was taken by another process: stopping", extra={"key": self.key})
                    on_lost()
                    return

        self._renewer = threading.Thread(target=renew_until_released, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        """Stop renewing and mark the lease expired (kept: no delete right needed); errors only logged."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self._etag is None or self.lost:
            return
        try:
            self._put(self._clock(), IfMatch=self._etag)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not release the run's lease", extra={"key": self.key, "reason": str(exc)})
        self._etag = None
