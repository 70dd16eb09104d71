"""`apilake query --athena`: waiting, paging, header rows, failures and timeouts (botocore's Stubber)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import apilake_cli.stack
from apilake.exceptions import ApilakeError
from apilake_cli.athena import AthenaQuery, QueryTimedOutError
from apilake_cli.main import main

EXECUTION = "b7d1c5e2-0000-4000-8000-000000000001"


def athena_execution(
    state: str, scanned: int = 0, reason: str | None = None, statement_type: str = "DML"
) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    return {
        "QueryExecution": {
            "QueryExecutionId": EXECUTION,
            "StatementType": statement_type,
            "Status": status,
            "Statistics": {"DataScannedInBytes": scanned},
            "ResultConfiguration": {"OutputLocation": f"s3://results/{EXECUTION}.csv"},
        }
    }


def rows(*values: tuple[str, ...], columns: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A GetQueryResults page; ``columns``: its metadata (the first page's)."""
    page: dict[str, Any] = {"ResultSet": {"Rows": [{"Data": [{"VarCharValue": v} for v in row]} for row in values]}}
    if columns is not None:
        page["ResultSet"]["ResultSetMetadata"] = {"ColumnInfo": [{"Name": c, "Type": "varchar"} for c in columns]}
    return page


def stubbed_athena(stubber: Stubber, *states: dict[str, Any]) -> None:
    start = {
        "QueryString": "select 1",
        "QueryExecutionContext": {"Database": "apilake_dev"},
        "WorkGroup": "apilake-dev",
    }
    stubber.add_response("start_query_execution", {"QueryExecutionId": EXECUTION}, start)
    for state in states:
        stubber.add_response("get_query_execution", state, {"QueryExecutionId": EXECUTION})


def test_athena_query_waits_reads_every_page_and_prices_the_scan() -> None:
    # Given Athena: queued, running, then succeeded after scanning 2 GB, its result in two pages
    athena = boto3.client("athena", region_name="us-east-1")
    slept: list[float] = []
    with Stubber(athena) as stubber:
        stubbed_athena(
            stubber, athena_execution("QUEUED"), athena_execution("RUNNING"), athena_execution("SUCCEEDED", 2 * 10**9)
        )
        stubber.add_response(
            "get_query_results",
            {**rows(("source", "n"), ("api-a", "1"), columns=("source", "n")), "NextToken": "t2"},
            {"QueryExecutionId": EXECUTION, "MaxResults": 1000},
        )
        stubber.add_response(
            "get_query_results",
            rows(("api-b", "2")),
            {"QueryExecutionId": EXECUTION, "MaxResults": 1000, "NextToken": "t2"},
        )
        # When the query runs
        result = AthenaQuery(athena, "apilake-dev", "apilake_dev", sleep=slept.append).run("select 1", timeout=60)
    # Then it waited a look at a time, the columns are the metadata's, the DML result's header row is dropped
    assert slept == [1.0, 1.0]
    assert result.columns == ["source", "n"] and result.rows == [("api-a", "1"), ("api-b", "2")]
    assert result.truncated is False
    # And the scan is priced at $5/TB
    assert result.bytes_scanned == 2 * 10**9 and result.cost_dollars == pytest.approx(0.01)


def test_athena_query_reads_max_rows_and_says_the_result_has_more() -> None:
    # Given a SELECT's result of five rows in pages
    athena = boto3.client("athena", region_name="us-east-1")
    with Stubber(athena) as stubber:
        stubbed_athena(stubber, athena_execution("SUCCEEDED"))
        # (asking for the header, the three rows wanted and one more: whether there are more is known)
        stubber.add_response(
            "get_query_results",
            {**rows(("n",), ("1",), ("2",), columns=("n",)), "NextToken": "t2"},
            {"QueryExecutionId": EXECUTION, "MaxResults": 5},
        )
        stubber.add_response(
            "get_query_results",
            {**rows(("3",), ("4",)), "NextToken": "t3"},
            {"QueryExecutionId": EXECUTION, "MaxResults": 2, "NextToken": "t2"},
        )
        # When at most three rows are read
        result = AthenaQuery(athena, "apilake-dev", "apilake_dev").run("select 1", timeout=60, max_rows=3)
        # Then three rows are kept, the rest of the result is not read, and the result says it has more
        stubber.assert_no_pending_responses()
    assert result.rows == [("1",), ("2",), ("3",)] and result.truncated is True
    assert result.as_dict()["output_location"] == f"s3://results/{EXECUTION}.csv"


@pytest.mark.parametrize(
    ("statement_type", "columns", "expected_columns", "expected_rows"),
    [
        ("DDL", ("tab_name",), ["tab_name"], [("tab_name",), ("source_api_a",)]),
        ("UTILITY", None, ["_col0"], [("tab_name",), ("source_api_a",)]),
        ("DML", None, ["tab_name"], [("source_api_a",)]),
    ],
    ids=["DDL: every row is data", "no metadata: numbered columns", "DML without metadata: the header row names"],
)
def test_athena_query_drops_the_first_row_of_a_dml_result_only(
    statement_type: str,
    columns: tuple[str, ...] | None,
    expected_columns: list[str],
    expected_rows: list[tuple[str, ...]],
) -> None:
    athena = boto3.client("athena", region_name="us-east-1")
    with Stubber(athena) as stubber:
        stubbed_athena(stubber, athena_execution("SUCCEEDED", statement_type=statement_type))
        stubber.add_response("get_query_results", rows(("tab_name",), ("source_api_a",), columns=columns))
        result = AthenaQuery(athena, "apilake-dev", "apilake_dev").run("select 1", timeout=60)
    assert (result.columns, result.rows) == (expected_columns, expected_rows)


@pytest.mark.parametrize(
    ("state", "reason", "error"),
    [
        (
            "FAILED",
            "COLUMN_NOT_FOUND: line 1:8: Column 'x' cannot be resolved",
            f"Athena query {EXECUTION} FAILED (workgroup apilake-dev): COLUMN_NOT_FOUND: line 1:8: Column 'x'",
        ),
        ("CANCELLED", None, f"Athena query {EXECUTION} CANCELLED (workgroup apilake-dev): no reason given"),
    ],
)
def test_athena_query_failed_or_cancelled_is_an_error_with_athenas_reason(
    state: str, reason: str | None, error: str
) -> None:
    athena = boto3.client("athena", region_name="us-east-1")
    with Stubber(athena) as stubber:
        stubbed_athena(stubber, athena_execution(state, reason=reason))
        with pytest.raises(ApilakeError) as raised:
            AthenaQuery(athena, "apilake-dev", "apilake_dev").run("select 1", timeout=60)
    assert error in str(raised.value)


def test_athena_query_still_running_at_the_timeout_is_cancelled() -> None:
    athena = boto3.client("athena", region_name="us-east-1")
    ticks = iter([0.0, 5.0, 11.0])
    with Stubber(athena) as stubber:
        stubbed_athena(stubber, athena_execution("RUNNING"), athena_execution("RUNNING"))
        stubber.add_response("stop_query_execution", {}, {"QueryExecutionId": EXECUTION})
        query = AthenaQuery(athena, "apilake-dev", "apilake_dev", clock=lambda: next(ticks), sleep=lambda _: None)
        with pytest.raises(QueryTimedOutError, match=f"query {EXECUTION} still RUNNING after 10s: cancelled"):
            query.run("select 1", timeout=10)
        stubber.assert_no_pending_responses()


class StubbedSession:
    """The command's AWS session, its clients stubbed (region us-east-1)."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients
        self.region_name = "us-east-1"

    def client(self, service: str, config: Any = None) -> Any:
        return self.clients[service]


def test_query_athena_timed_out_with_json_prints_the_query_and_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose Athena query stays RUNNING
    cloudformation, athena = (boto3.client(name, region_name="us-east-1") for name in ("cloudformation", "athena"))
    outputs = [
        {"OutputKey": "AthenaWorkGroupName", "OutputValue": "apilake-dev"},
        {"OutputKey": "GlueDatabaseName", "OutputValue": "apilake_dev"},
    ]
    stack = {"StackName": "apilake-dev", "CreationTime": "2026-11-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE"}
    with Stubber(cloudformation) as cf_stub, Stubber(athena) as athena_stub:
        cf_stub.add_response("describe_stacks", {"Stacks": [{**stack, "Outputs": outputs}]})
        stubbed_athena(athena_stub, athena_execution("RUNNING"))
        athena_stub.add_response("stop_query_execution", {}, {"QueryExecutionId": EXECUTION})
        session = StubbedSession({"cloudformation": cloudformation, "athena": athena})
        monkeypatch.setattr(apilake_cli.stack, "new_session", lambda profile, region: session)
        # When it is run with --json and no time to wait
        code = main(["query", "--athena", "select 1", "--stack-name", "apilake-dev", "--timeout", "0", "--json"])
    # Then it exits 3, its document naming the query (cancelled) and the error
    assert code == 3
    assert json.loads(capsys.readouterr().out) == {
        "query_execution_id": EXECUTION,
        "error": f"query {EXECUTION} still RUNNING after 0s: cancelled (--timeout waits longer)",
        "timed_out": True,
    }
