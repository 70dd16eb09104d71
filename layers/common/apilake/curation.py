"""The curated step on AWS: Athena rewrites a source's ingestion date as typed Parquet once a run of it is complete.

The completeness check drives it (:meth:`apilake.completeness.CompletenessCheck.check`): at each check, for each
run of the last :data:`apilake.completeness.RECENT` that is complete for a source with ``columns`` (its report
says so), the run's ingestion date (a run lands every page under its manifest's date) is curated once:

- the date is locked (``ledger/source=<S>/state/curating/ingestion_date=<D>.json``, :class:`DateLock`, a
  conditional write naming the marker that holds it): one curation of a date at a time, whoever starts it (a
  check, ``apilake curate``); a lock whose marker ended is free, a running one's marker is followed first;
- a marker ``ledger/source=<S>/run=<R>/curated.json`` (:class:`CurationMarker`) is created with a conditional
  write (two checks never both start it), and :func:`apilake.curated.unload_statement` is started in the stack's
  workgroup (its ``BytesScannedCutoffPerQuery`` bounds the scan; ``ClientRequestToken`` makes a repeated start
  one query), writing into a new, empty staging prefix (:mod:`apilake.staging`:
  ``curated-staging/source=<S>/ingestion_date=<D>/run=<R>/attempt=<n>/``); the marker keeps the query id;
- at later checks a running marker is looked at (``GetQueryExecution``): SUCCEEDED swaps the staged files into
  the date's curated prefix (``curated/source=<S>/ingestion_date=<D>/``: the objects there are listed, the
  staged ones copied in, the listed ones deleted, then the staged ones; the partition is never empty, briefly
  doubled, which ``_current`` dedups by id) and makes the marker ``done`` (with the bytes scanned); FAILED or
  CANCELLED ``failed`` with Athena's reason, the live partition untouched. A failed curation is started once
  again at a later check (:data:`MAX_ATTEMPTS`), then left failed; the metric ``curation_failed`` (per source)
  counts the failed ones of the window, the log says why. A stale ``starting`` marker (its check stopped) is a
  failed attempt: its retry may overlap an UNLOAD started just before the stop, but each attempt has its own
  staging prefix and only a SUCCEEDED one's marker swaps, so the overlap never reaches the live partition;
- after a source's first curation done, and whenever its view DDL changes (the ``columns``, the record id, the
  ``curated.recent_days``: a hash of the statements kept in ``ledger/source=<S>/state/views.json``,
  :class:`ViewsState`), :func:`apilake.curated.create_current_view` and
  :func:`~apilake.curated.create_recent_view` run in the workgroup, retried like a curation; the stack's views
(``stack_views``: over every run's summary) at the first check, likewise (``ledger/state/views.json``).

At most :data:`MAX_STARTS` queries are started a check (views first, then the runs oldest first); the rest wait
for the next check. A date being curated (a claim not done or failed, this check's or another's) is not started
again for another run until that one ends. Idempotent: a curation of a date recomputes its partition from all the
date's raw pages, so running it again (another run of the date, a retry, ``apilake curate``) gives the same
partition; a swap repeated (a check stopped in it) copies to the same keys and deletes the same objects.

``apilake curate`` (:func:`request_tasks`) re-curates a source's older dates through the same steps, its markers
under ``ledger/source=<S>/curate/request=<R>/ingestion_date=<D>.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError

from apilake.config import Source
from apilake.curated import create_current_view, create_recent_view, curated_prefix, unload_statement
from apilake.exceptions import ApilakeError, describe_validation_error
from apilake.lake import ALREADY_EXISTS_CODES, NOT_FOUND_CODES, is_not_found
from apilake.ledger import LEDGER_PREFIX, source_ledger_prefix
from apilake.observability import Metric, count, count_stack, logger
from apilake.staging import delete, keys, staging_prefix, swap

MAX_STARTS = 10  # queries started per check at most
MAX_ATTEMPTS = 2  # a failed curation (or view DDL) is started once again, at a later check, then left failed
# A marker still ``starting`` this long after it was written: the check that wrote it stopped before it recorded
# its query (the Lambda's timeout is well under it); it counts as a failed attempt.
STALE_START = timedelta(minutes=15)


class State(StrEnum):
    STARTING = "starting"  # the marker is written, the query not recorded yet
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


_FINISHED = {"SUCCEEDED": State.DONE, "FAILED": State.FAILED, "CANCELLED": State.FAILED}


def marker_key(source: str, run_id: str) -> str:
    return f"{source_ledger_prefix(source)}run={run_id}/curated.json"


def request_marker_key(source: str, request_id: str, ingestion_date: date) -> str:
    """``apilake curate``'s marker of one date: ``ledger/source=<S>/curate/request=<R>/ingestion_date=<D>.json``."""
    return f"{source_ledger_prefix(source)}curate/request={request_id}/ingestion_date={ingestion_date.isoformat()}.json"


def lock_key(source: str, ingestion_date: date) -> str:
    """The date's :class:`DateLock`: ``ledger/source=<S>/state/curating/ingestion_date=<D>.json``."""
    return f"{source_ledger_prefix(source)}state/curating/ingestion_date={ingestion_date.isoformat()}.json"


STACK_VIEWS = ""  # the views' scope that is no source's: the stack's (every run's summary)


def views_key(scope: str) -> str:
    """A source's view DDL state, or the stack's (:data:`STACK_VIEWS`): ``ledger/state/views.json``."""
    return f"{source_ledger_prefix(scope)}state/views.json" if scope else f"{LEDGER_PREFIX}/state/views.json"


def view_statements(source: Source) -> list[str]:
    """The source's view DDL: ``_current`` (when its record id is a declared column) and ``_recent``."""
    current = create_current_view(source)
    return [*([current] if current else []), create_recent_view(source)]


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\n\0".join(parts).encode()).hexdigest()


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: State
    attempt: int = 1
    started_at: datetime
    finished_at: datetime | None = None
    reason: str | None = None  # why it failed (Athena's, or the start's error)


class CurationMarker(_Stored):
    """``ledger/source=<S>/run=<R>/curated.json``: the curation of a run's ingestion date for a source."""

    source: str
    run_id: str
    ingestion_date: date
    query_execution_id: str | None = None
    bytes_scanned: int | None = None


class DateLock(BaseModel):
    """``ledger/source=<S>/state/curating/ingestion_date=<D>.json``: the marker of the date's curation (free once
    that marker is done or failed)."""

    model_config = ConfigDict(extra="forbid")

    marker: str  # its key
    locked_at: datetime


class ViewsState(_Stored):
    """``ledger/source=<S>/state/views.json``: the source's view DDL as last run (``sha256`` of the statements);
    ``ledger/state/views.json`` the stack's (``source`` empty)."""

    source: str
    sha256: str
    query_execution_ids: list[str] = []


@dataclass(frozen=True)
class CurationTask:
    """A run complete for a source with columns, whose ingestion date is to be curated."""

    source: Source
    run_id: str
    ingestion_date: date
    planned: datetime  # the run's manifest's LastModified: oldest first
    request: bool = False  # ``apilake curate``'s: ``run_id`` is the request's id

    @property
    def key(self) -> str:
        """Its marker's key."""
        name, day = self.source.name, self.ingestion_date
        return request_marker_key(name, self.run_id, day) if self.request else marker_key(name, self.run_id)


def request_tasks(source: Source, dates: Sequence[date], request_id: str, now: datetime) -> list[CurationTask]:
    """``apilake curate``'s work: each date of ``source`` curated again, under the request's id."""
    return [CurationTask(source, request_id, day, now, request=True) for day in sorted(set(dates))]


class CurationOutcome(BaseModel):
    """A curation as the check left it (the check's summary lists them)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    run_id: str
    ingestion_date: date
    state: State | None  # None: not started yet (the bound, or the date is being curated for another run)
    attempt: int = 0
    query_execution_id: str | None = None
    bytes_scanned: int | None = None
    reason: str | None = None


class CurationSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[CurationOutcome]
    views: dict[str, State]  # source (empty: the stack's) -> its view DDL's state
    started: int  # queries started by this check


@dataclass
class _Doc[M: BaseModel]:
    """A stored document at ``key`` with the ETag it was read or written with (None: absent)."""

    key: str
    model: M | None
    etag: str | None
    changed_now: bool = False  # finished (failed) in this check: a retry waits for a later one


class Curation:
    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        athena_client: Any,
        workgroup: str,
        database: str,
        max_starts: int = MAX_STARTS,
        stack_views: Sequence[str] = (),
    ) -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self._athena = athena_client
        self.workgroup = workgroup
        self.database = database
        self.max_starts = max_starts
        self.stack_views = list(stack_views)  # DDL of views over every source (created at the first check)

    def advance(self, tasks: Sequence[CurationTask], now: datetime, emit: bool = True) -> CurationSummary:
        """Look at the running curations and view DDL of ``tasks``' sources, start what is due (within the bound),
        and emit ``curation_failed`` per source (``emit``: the check's, not ``apilake curate``'s)."""
        tasks = sorted(tasks, key=lambda task: (task.planned, task.run_id, task.source.name))
        markers = {id(task): self._read(task.key, CurationMarker) for task in tasks}
        for doc in markers.values():
            self._follow(doc, now)
        sources = {task.source.name: task.source for task in tasks}
        budget = self.max_starts
        # The views: a source's once it has a curated date (done), the stack's at once.
        scopes = [(STACK_VIEWS, self.stack_views, True)] if self.stack_views else []
        for name, source in sources.items():
            done = [markers[id(task)].model for task in tasks if task.source.name == name]
            curated = any(marker is not None and marker.state is State.DONE for marker in done)
            scopes.append((name, view_statements(source), curated))
        views: dict[str, _Doc[ViewsState]] = {}
        for scope, statements, ready in scopes:
            views[scope] = view = self._read(views_key(scope), ViewsState)
            self._follow(view, now)
            if ready and budget >= len(statements) and _views_due(statements, view):
                budget -= self._start_views(scope, statements, view, now)
        # A date is busy while a claim of it is not done or failed: this check's markers here, another's (a check,
        # apilake curate) through the date's lock; a claim lost to another check keeps it busy too.
        busy = {
            (doc.model.source, doc.model.ingestion_date)
            for doc in markers.values()
            if doc.model is not None and doc.model.state in (State.STARTING, State.RUNNING)
        }
        for task in tasks:
            doc = markers[id(task)]
            if budget <= 0 or (task.source.name, task.ingestion_date) in busy or not _due(doc):
                continue
            busy.add((task.source.name, task.ingestion_date))
            if self._start(task, doc, now):
                budget -= 1
        if emit:
            self._count_failed(sources, tasks, markers, views)
        return CurationSummary(
            runs=[_outcome(task, markers[id(task)].model) for task in tasks],
            views={name: doc.model.state for name, doc in views.items() if doc.model is not None},
            started=self.max_starts - budget,
        )

    # -- following what runs -------------------------------------------------------------------------------------
    def _follow[M: _Stored](self, doc: _Doc[M], now: datetime) -> None:
        """Update a running marker (or views state) from Athena; a stale ``starting`` one fails. A curation that
        SUCCEEDED has its staged files swapped into the curated prefix first (:meth:`_swap`)."""
        model = doc.model
        if model is None or model.state not in (State.STARTING, State.RUNNING):
            return
        if model.state is State.STARTING:
            if now - model.started_at < STALE_START:
                return
            update: dict[str, Any] = {"state": State.FAILED, "reason": "the check that started it stopped first"}
        else:
            update = self._finished(_query_ids(model))
            if not update:
                return
            if isinstance(model, CurationMarker):
                update |= self._settle(model, update["state"])
        updated = model.model_copy(update={**update, "finished_at": now})
        etag = self._write(doc.key, updated, doc.etag)
        if etag is None:  # another check updated it first: read again at the next one
            return
        doc.model, doc.etag, doc.changed_now = updated, etag, True
        _log_finished(updated)

    def _finished(self, query_ids: list[str]) -> dict[str, Any]:
        """What Athena says of the queries: {} while one runs, else the marker's new state (failed: the first
        failure's reason; done: the bytes scanned)."""
        scanned = 0
        for query_id in query_ids:
            execution = self._athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            status = execution["Status"]
            state = _FINISHED.get(status["State"])
            if state is None:
                return {}
            if state is State.FAILED:
                error = status.get("AthenaError", {}).get("ErrorMessage")
                reason = status.get("StateChangeReason") or error or "no reason given"
                return {"state": State.FAILED, "reason": f"query {query_id} {status['State'].lower()}: {reason}"}
            scanned += int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
        return {"state": State.DONE, "bytes_scanned": scanned}

    # -- starting ------------------------------------------------------------------------------------------------
    def _settle(self, marker: CurationMarker, state: State) -> dict[str, Any]:
        """A finished UNLOAD's files: swapped in (SUCCEEDED), or removed (failed); the marker's failure if the swap
        did not go through (the live partition then still holds every row: its old objects are deleted last)."""
        staged = staging_prefix(marker.source, marker.ingestion_date, marker.run_id, marker.attempt)
        try:
            if state is State.DONE:
                swap(self._s3, self.bucket, staged, curated_prefix(marker.source, marker.ingestion_date))
            else:
                delete(self._s3, self.bucket, keys(self._s3, self.bucket, staged), staged)
        except (ClientError, ApilakeError) as exc:
            if state is State.DONE:
                return {"state": State.FAILED, "reason": f"not swapped into the curated prefix: {exc}"}
            logger.warning("failed curation's staged files left", extra={"prefix": staged, "error": str(exc)})
        return {}

    def _lock(self, task: CurationTask, owner: str, now: datetime) -> bool:
        """Take the date's lock for the marker ``owner``: free when absent, ``owner``'s, or its marker's curation
        ended (followed first: a running one may have ended, its swap is done then). False: busy."""
        doc = self._read(lock_key(task.source.name, task.ingestion_date), DateLock)
        if doc.model is not None and doc.model.marker != owner:
            held = self._read(doc.model.marker, CurationMarker)
            self._follow(held, now)
            if held.model is not None and held.model.state in (State.STARTING, State.RUNNING):
                return False
        return self._write(doc.key, DateLock(marker=owner, locked_at=now), doc.etag) is not None

    def _start(self, task: CurationTask, doc: _Doc[CurationMarker], now: datetime) -> bool:
        """Take the date's lock, claim the run's curation (the marker's conditional write), start the UNLOAD into
        the attempt's staging prefix. False when the date is busy or another check claimed the run first."""
        name, day = task.source.name, task.ingestion_date
        attempt = doc.model.attempt + 1 if doc.model is not None else 1
        marker = CurationMarker(
            source=name, run_id=task.run_id, ingestion_date=day, state=State.STARTING, attempt=attempt, started_at=now
        )
        key = doc.key
        if not self._lock(task, key, now):
            return False
        etag = self._write(key, marker, doc.etag)
        if etag is None:
            return False
        statement = unload_statement(task.source, day, self.bucket, staging_prefix(name, day, task.run_id, attempt))
        try:
            query_id = self._query(statement, _sha256(name, task.run_id, day.isoformat(), str(attempt)))
        except ClientError as exc:
            update: dict[str, Any] = {"state": State.FAILED, "reason": f"not started: {exc}", "finished_at": now}
        else:
            update = {"state": State.RUNNING, "query_execution_id": query_id}
        marker = marker.model_copy(update=update)
        doc.model, doc.etag = marker, self._write(key, marker, etag)
        logger.info("curation started", extra=marker.model_dump(mode="json"))
        if marker.state is State.FAILED:
            _log_finished(marker)
        return True

    def _start_views(self, scope: str, statements: list[str], doc: _Doc[ViewsState], now: datetime) -> int:
        """Run a source's view DDL (or the stack's); the number of queries started."""
        digest = _sha256(*statements)
        same = doc.model is not None and doc.model.sha256 == digest
        attempt = doc.model.attempt + 1 if doc.model is not None and same else 1
        state = ViewsState(source=scope, sha256=digest, state=State.STARTING, attempt=attempt, started_at=now)
        key = doc.key
        etag = self._write(key, state, doc.etag)
        if etag is None:
            return 0
        started: list[str] = []
        update: dict[str, Any] = {"state": State.RUNNING}
        try:
            for number, statement in enumerate(statements):
                token = _sha256("views", digest, str(attempt), str(number), now.isoformat())  # A->B->A: new
                started.append(self._query(statement, token))
        except ClientError as exc:
            update = {"state": State.FAILED, "reason": f"not started: {exc}", "finished_at": now}
        state = state.model_copy(update={**update, "query_execution_ids": started})
        doc.model, doc.etag = state, self._write(key, state, etag)
        logger.info("view DDL started", extra=state.model_dump(mode="json"))
        if state.state is State.FAILED:
            _log_finished(state)
        return len(started)

    def _query(self, statement: str, token: str) -> str:
        response = self._athena.start_query_execution(
            QueryString=statement,
            QueryExecutionContext={"Database": self.database},
            WorkGroup=self.workgroup,
            ClientRequestToken=token,
        )
        return str(response["QueryExecutionId"])

    # -- the stored documents ------------------------------------------------------------------------------------
    def _read[M: BaseModel](self, key: str, model: type[M]) -> _Doc[M]:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return _Doc(key, None, None)
            raise
        try:
            return _Doc(key, model.model_validate(json.loads(response["Body"].read())), response["ETag"])
        except (ValueError, ValidationError) as exc:
            where = f"s3://{self.bucket}/{key}"
            if isinstance(exc, ValidationError):
                raise ApilakeError(describe_validation_error(where, exc, whole="(document)")) from exc
            raise ApilakeError(f"{where}: not JSON ({exc})") from exc

    def _write(self, key: str, document: BaseModel, etag: str | None) -> str | None:
        """Create ``key`` if absent (``etag`` None) or replace the version read (``etag``); its new ETag, or None
        when another writer got there first."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=document.model_dump_json().encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (*ALREADY_EXISTS_CODES, *NOT_FOUND_CODES):
                return None
            raise
        return str(response["ETag"])

    def _count_failed(
        self,
        sources: dict[str, Source],
        tasks: Sequence[CurationTask],
        markers: dict[int, _Doc[CurationMarker]],
        views: dict[str, _Doc[ViewsState]],
    ) -> None:
        total = 0  # and for the stack, which CurationFailedAlarm watches
        for name in sources:
            docs = [markers[id(task)].model for task in tasks if task.source.name == name] + [views[name].model]
            failed = sum(doc is not None and doc.state is State.FAILED for doc in docs)
            count(name, Metric.CURATION_FAILED, failed)
            total += failed
        count_stack(Metric.CURATION_FAILED, total)


def _views_due(statements: list[str], doc: _Doc[ViewsState]) -> bool:
    """Never run, or of other statements (once the last run ended), or failed before this check with an attempt
    left."""
    state = doc.model
    if state is None:
        return True
    if state.state in (State.STARTING, State.RUNNING):
        return False
    if state.sha256 != _sha256(*statements):
        return True
    return state.state is State.FAILED and state.attempt < MAX_ATTEMPTS and not doc.changed_now


def _due(doc: _Doc[CurationMarker]) -> bool:
    """Not curated yet, or failed before this check with an attempt left."""
    marker = doc.model
    if marker is None:
        return True
    return marker.state is State.FAILED and marker.attempt < MAX_ATTEMPTS and not doc.changed_now


def _query_ids(model: _Stored) -> list[str]:
    if isinstance(model, CurationMarker):
        return [model.query_execution_id] if model.query_execution_id else []
    return list(model.query_execution_ids) if isinstance(model, ViewsState) else []


def _log_finished(model: _Stored) -> None:
    what = "curation" if isinstance(model, CurationMarker) else "view DDL"
    extra = model.model_dump(mode="json")
    if model.state is State.DONE:
        logger.info(f"{what} done", extra=extra)
    elif model.attempt < MAX_ATTEMPTS:
        logger.warning(f"{what} failed: started again at a later check", extra=extra)
    else:
        logger.error(f"{what} failed: left failed (after {model.attempt} attempts)", extra=extra)


def _outcome(task: CurationTask, marker: CurationMarker | None) -> CurationOutcome:
    base = {"source": task.source.name, "run_id": task.run_id, "ingestion_date": task.ingestion_date}
    if marker is None:
        return CurationOutcome(**base, state=None)
    return CurationOutcome(
        **base,
        state=marker.state,
        attempt=marker.attempt,
        query_execution_id=marker.query_execution_id,
        bytes_scanned=marker.bytes_scanned,
        reason=marker.reason,
    )
