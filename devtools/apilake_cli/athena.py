"""`apilake query --athena`: one statement in the stack's workgroup and database, waited for, its result
table read page by page, and what it scanned (Athena bills by the bytes scanned)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apilake.exceptions import ApilakeError

DOLLARS_PER_TB = 5.0  # Athena's price per terabyte scanned (most regions); a rough figure, not the bill
RUNNING = ("QUEUED", "RUNNING")


class QueryTimedOutError(ApilakeError):
    """The query was still running when the timeout passed (it has been cancelled)."""


@dataclass(frozen=True)
class AthenaResult:
    execution_id: str
    columns: list[str]
    rows: list[tuple[str | None, ...]]
    bytes_scanned: int

    @property
    def cost_dollars(self) -> float:
        return self.bytes_scanned / 1e12 * DOLLARS_PER_TB

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_execution_id": self.execution_id,
            "columns": self.columns,
            "rows": [list(row) for row in self.rows],
            "bytes_scanned": self.bytes_scanned,
            "cost_dollars": self.cost_dollars,
        }


@dataclass
class AthenaQuery:
    athena: Any
    workgroup: str
    database: str
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def run(self, statement: str, timeout: float, interval: float = 1.0) -> AthenaResult:
        """Start ``statement``, wait for it, read its result; FAILED or CANCELLED is an error with Athena's reason."""
        execution_id: str = self.athena.start_query_execution(
            QueryString=statement, QueryExecutionContext={"Database": self.database}, WorkGroup=self.workgroup
        )["QueryExecutionId"]
        stop_at = self.clock() + timeout
        while True:
            execution = self.athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
            state = execution["Status"]["State"]
            if state not in RUNNING:
                break
            if self.clock() >= stop_at:
                self.athena.stop_query_execution(QueryExecutionId=execution_id)
                raise QueryTimedOutError(
                    f"query {execution_id} still {state} after {timeout:.0f}s: cancelled (--timeout waits longer)"
                )
            self.sleep(interval)
        if state != "SUCCEEDED":
            reason = execution["Status"].get("StateChangeReason") or "no reason given"
            raise ApilakeError(f"Athena query {execution_id} {state} (workgroup {self.workgroup}): {reason}")
        columns, rows = self._results(execution_id)
        scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
        return AthenaResult(execution_id, columns, rows, scanned)

    def _results(self, execution_id: str) -> tuple[list[str], list[tuple[str | None, ...]]]:
        """Every row of the result, page by page; the first row of the first page is the header."""
        rows: list[tuple[str | None, ...]] = []
        for page in self.athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id):
            rows += [tuple(cell.get("VarCharValue") for cell in row["Data"]) for row in page["ResultSet"]["Rows"]]
        if not rows:
            return [], []
        header, *body = rows
        return [str(name) for name in header], body
