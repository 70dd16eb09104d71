"""The one place where logs and metrics are set up.

Logs are JSON (Powertools Logger); metrics are CloudWatch EMF (Powertools Metrics) in the
``apilake`` namespace with the dimension ``source``, or, for the few that speak of the whole stack
(the completeness check's counts), the dimension ``service`` alone. The same counts are also kept in
process (:data:`totals`, the stack's under :data:`STACK`), so that a local run can print them without
parsing its own logs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

SERVICE = "apilake"
# One namespace per deployed stage (the template sets it), so that dev and prod do not mix.
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "apilake")

logger = Logger(service=SERVICE)
# The standard-library logger under Powertools' (same name, same JSON formatter), for APIs that want one.
std_logger = logging.getLogger(SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class Metric(StrEnum):
    PAGES_INGESTED = "pages_ingested_total"
    PAGES_UNCHANGED = "pages_unchanged_total"
    RECORDS_INGESTED = "records_ingested_total"
    BYTES_WRITTEN = "bytes_written_total"
    FAILURES = "failures_total"
    RETRIES = "retries_total"
    THROTTLED = "throttled_total"
    PARKED = "parked_total"
    MESSAGES_ENQUEUED = "messages_enqueued_total"
    API_LATENCY = "api_latency_ms"
    # The completeness check's (apilake.completeness): per source, of its latest due scheduled run...
    RUN_COMPLETE = "run_complete"
    PAGES_MISSING = "pages_missing"
    RECORDS_LANDED = "records_landed"
    SCHEMA_DRIFT_FIELDS = "schema_drift_fields"  # a source with columns: fields new, missing or of a changed type
    # a source with columns: its runs of the last 48 h whose curation failed (apilake.curation), its view DDL's too
    CURATION_FAILED = "curation_failed"
    # ... and for the stack, what the alarms watch.
    SOURCES_INCOMPLETE = "sources_incomplete"
    SOURCES_LANDED_NOTHING = "sources_landed_nothing"
    # `apilake ingest`'s, for the stack at the end of each run (container/fargate.yaml's alarms watch them): the
    # pages the run landed (written or unchanged), and those that failed on every attempt.
    INGEST_PAGES_LANDED = "ingest_pages_landed"
    INGEST_PAGES_FAILED = "ingest_pages_failed"


_UNITS = {Metric.BYTES_WRITTEN: MetricUnit.Bytes, Metric.API_LATENCY: MetricUnit.Milliseconds}


class Totals:
    """Thread-safe running sums per (source, metric), for local runs and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[tuple[str, str], float] = defaultdict(float)

    def add(self, source: str, metric: Metric, value: float) -> None:
        with self._lock:
            self._counts[(source, metric.value)] += value

    def get(self, source: str, metric: Metric) -> float:
        with self._lock:
            return self._counts.get((source, metric.value), 0.0)

    def snapshot(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._counts)


totals = Totals()


_totals_only = threading.Event()


@contextmanager
def totals_only() -> Iterator[None]:
    """While it lasts, :func:`count` keeps :data:`totals` only and prints no EMF (`apilake ingest`: several EMF
    documents a page is too many; the runner prints each source's totals once, :func:`emit_source_totals`)."""
    _totals_only.set()
    try:
        yield
    finally:
        _totals_only.clear()


def count(source: str, metric: Metric, value: float = 1) -> None:
    """Count ``value`` of ``metric`` for ``source``, in EMF and in :data:`totals`."""
    totals.add(source, metric, value)
    if _totals_only.is_set():
        return
    unit = _UNITS.get(metric, MetricUnit.Count)
    if metrics.default_dimensions.get("source") == source:
        # The worker's own source: aggregated into the one EMF document flushed at the end of the invoke.
        metrics.add_metric(name=metric.value, unit=unit, value=value)
        return
    # Another source (the planner works on several): a document of its own, with that dimension.
    with single_metric(
        name=metric.value, unit=unit, value=value, namespace=NAMESPACE, default_dimensions={"source": source}
    ):
        pass


STACK = ""  # the source under which :data:`totals` keeps a stack-wide metric


def count_stack(metric: Metric, value: float) -> None:
    """Emit ``value`` of a stack-wide ``metric``: a document of its own, with the ``service`` dimension only
    (never the ``source`` of this invoke's aggregated metrics), which an alarm can name."""
    totals.add(STACK, metric, value)
    with single_metric(
        name=metric.value,
        unit=_UNITS.get(metric, MetricUnit.Count),
        value=value,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ):
        pass


def emit_source_totals(source: str, values: Mapping[Metric, float]) -> None:
    """One EMF document for ``source`` (dimensions source and service, as a worker's) with each of ``values``."""
    document = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    document.add_dimension(name="source", value=source)
    for metric, value in values.items():
        document.add_metric(name=metric.value, unit=_UNITS.get(metric, MetricUnit.Count), value=value)
    document.flush_metrics()


def use_source(source: str) -> None:
    """Make ``source`` the dimension of this invoke's aggregated metrics (kept across invokes)."""
    if metrics.default_dimensions.get("source") != source:
        metrics.set_default_dimensions(source=source)
