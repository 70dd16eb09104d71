"""`apilake query --athena`: one statement in the stack's workgroup and database, waited for, its result
table read page by page up to a number of rows, and what it scanned (Athena bills by the bytes scanned).

The columns are the result's metadata (``ResultSetMetadata.ColumnInfo``); only a DML statement's result
(SELECT, ...) repeats them as its first row, which is dropped. A DDL or utility statement's rows (SHOW
TABLES, DESCRIBE) are all data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apilake.exceptions import ApilakeError

DOLLARS_PER_TB = 5.0  # Athena's price per terabyte scanned (most regions); a rough figure, not the bill
RUNNING = ("QUEUED", "RUNNING")
MAX_ROWS = 1000  # the rows read by default: the whole result is in the workgroup's output location
PAGE_ROWS = 1000  # GetQueryResults' most rows a page


class QueryTimedOutError(ApilakeError):
    """The query was still running when the timeout passed (it has been cancelled)."""

    def __init__(self, message: str, execution_id: str) -> None:
        super().__init__(message)
        self.execution_id = execution_id


@dataclass(frozen=True)
class AthenaResult:
    execution_id: str
    columns: list[str]
    rows: list[tuple[str | None, ...]]
    bytes_scanned: int
    truncated: bool = False  # more rows than were read (``max_rows``)
    output_location: str | None = None  # the whole result, as CSV, in S3

    @property
    def cost_dollars(self) -> float:
        return self.bytes_scanned / 1e12 * DOLLARS_PER_TB

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_execution_id": self.execution_id,
            "columns": self.columns,
            "rows": [list(row) for row in self.rows],
            "truncated": self.truncated,
            "output_location": self.output_location,
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

    def run(self, statement: str, timeout: float, interval: float = 1.0, max_rows: int = MAX_ROWS) -> AthenaResult:
        """Start ``statement``, wait for it, read its result's first ``max_rows`` rows; FAILED or CANCELLED is an
        error with Athena's reason."""
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
                    f"query {execution_id} still {state} after {timeout:.0f}s: cancelled (--timeout waits longer)",
                    execution_id,
                )
            self.sleep(interval)
        if state != "SUCCEEDED":
            reason = execution["Status"].get("StateChangeReason") or "no reason given"
            raise ApilakeError(f"Athena query {execution_id} {state} (workgroup {self.workgroup}): {reason}")
        header = execution.get("StatementType") == "DML"
        columns, rows, truncated = self._results(execution_id, header, max_rows)
        scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
        location = execution.get("ResultConfiguration", {}).get("OutputLocation")
        return AthenaResult(execution_id, columns, rows, scanned, truncated, location)

    def _results(
        self, execution_id: str, header: bool, max_rows: int
    ) -> tuple[list[str], list[tuple[str | None, ...]], bool]:
        """The columns, the first ``max_rows`` rows (without the header row a DML result starts with), and
        whether the result has more; a page at a time, asking for no more rows than are still wanted."""
        names: list[str] = []
        rows: list[tuple[str | None, ...]] = []
        token: str | None = None
        first = True
        while first or (token is not None and len(rows) <= max_rows):
            # One row more than wanted: whether the result has more is known without reading it all.
            wanted = min(PAGE_ROWS, max_rows - len(rows) + 1 + (1 if header and first else 0))
            page = self.athena.get_query_results(
                QueryExecutionId=execution_id, MaxResults=wanted, **({"NextToken": token} if token else {})
            )
            found = [tuple(cell.get("VarCharValue") for cell in row["Data"]) for row in page["ResultSet"]["Rows"]]
            if first:
                metadata = page["ResultSet"].get("ResultSetMetadata", {})
                names = [column["Name"] for column in metadata.get("ColumnInfo", [])]
                if header and found:
                    names, found = names or [str(name) for name in found[0]], found[1:]
            rows += found
            token, first = page.get("NextToken"), False
        if not names and rows:
            names = [f"_col{i}" for i in range(len(rows[0]))]
        return names, rows[:max_rows], len(rows) > max_rows
