"""The operator commands that look and repair (status, dlq peek, redrive, query --athena, report) against the
deployed stack of test_operate.py (moto's server)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import requests

from apilake.messages import WorkItem
from apilake.report import RunReport, report_keys
from apilake_cli.main import main
from apilake_cli.redrive import peek
from tests.integration.test_operate import (  # noqa: F401 - deployed_stack: the fixture "deployed"
    DATABASE,
    REGION,
    RUN,
    WHERE,
    WORKGROUP,
    Deployed,
    deployed_stack,
    out_json,
)


def test_status_adds_each_sources_dlq_depth_to_the_ledger(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a planned run (nothing landed) and two messages in api-b's DLQ
    assert main([*RUN, "--run-id", "one"]) == 0
    for page in (1, 2):
        deployed.sqs.send_message(QueueUrl=deployed.queue("api-b", dead_letter=True), MessageBody=f"{page}")
    capsys.readouterr()
    # When status reads the latest run of the stack
    assert main(["status", *WHERE]) == 1
    # Then each source says its DLQ's depth, the messages of every run
    printed = capsys.readouterr().out
    assert "api-a: INCOMPLETE, DLQ (all runs): 0 message(s)" in printed
    assert "api-b: INCOMPLETE, DLQ (all runs): 2 message(s)" in printed
    assert main(["status", *WHERE, "--json"]) == 1
    document = out_json(capsys)
    assert {s["source"]: s["dlq_messages"] for s in document["sources"]} == {"api-a": 0, "api-b": 2}
    assert document["run_id"] == "one" and document["complete"] is False


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_of_an_old_run_says_a_removed_sources_dlq_is_gone(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run of both sources, then api-b removed from the stack (its queues deleted)
    assert main([*RUN, "--run-id", "old"]) == 0
    for dead_letter in (False, True):
        deployed.sqs.delete_queue(QueueUrl=deployed.queue("api-b", dead_letter))
    capsys.readouterr()
    # When status reads that run
    code = main(["status", *WHERE, "--run", "old", *(["--json"] if as_json else [])])
    # Then it answers (1: the run is not complete), api-b's DLQ gone
    assert code == 1
    if as_json:
        assert {s["source"]: s["dlq_messages"] for s in out_json(capsys)["sources"]} == {"api-a": 0, "api-b": None}
    else:
        assert "api-b: INCOMPLETE, DLQ: gone (the stack has no DLQ of this source now)" in capsys.readouterr().out


def test_dlq_peek_shows_a_message_that_is_not_a_work_item_as_it_is(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    item = WorkItem.model_validate(
        {"run_id": "r1", "source": "api-b", "ingestion_date": "2026-11-26", "shard": "all", "page": 4}
    )
    deployed.sqs.send_message(QueueUrl=deployed.queue("api-b", dead_letter=True), MessageBody="not json")
    deployed.sqs.send_message(QueueUrl=deployed.queue("api-b", dead_letter=True), MessageBody=item.model_dump_json())
    assert main(["dlq", "peek", *WHERE, "--source", "api-b"]) == 1
    printed = capsys.readouterr().out
    assert "api-b: 2 message(s) in apilake-test-api-b-dlq (left in place)" in printed
    assert "not a work item: not json" in printed
    assert "run r1 shard all page 4: received 0 time(s)" in printed and "no failure noted in the ledger" in printed


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_dlq_peek_says_when_the_dlq_holds_messages_it_could_not_see(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given api-a's DLQ with two messages, one of them received by another consumer (in flight for a minute)
    dlq = deployed.queue("api-a", dead_letter=True)
    for body in ("one", "two"):
        deployed.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    deployed.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=1, VisibilityTimeout=60)
    # When the DLQ is peeked at
    code = main(["dlq", "peek", *WHERE, "--source", "api-a", *(["--json"] if as_json else [])])
    # Then it shows the one it could see, says the queue holds two (exit 1), and why the other is not shown
    assert code == 1
    if as_json:
        document = out_json(capsys)
        assert document["depth"] == {"visible": 1, "in_flight": 1, "delayed": 0, "total": 2}
        assert len(document["messages"]) == 1
    else:
        assert (
            "api-a: 1 of about 2 message(s) in apilake-test-api-a-dlq shown (left in place); the other 1 are in "
            "flight elsewhere (another peek, a redrive) or delayed" in capsys.readouterr().out
        )


def test_dlq_peek_of_an_empty_dlq_exits_0(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "peek", *WHERE, "--source", "api-a", "--json"]) == 0
    document = out_json(capsys)
    assert (document["messages"], document["depth"]["total"]) == ([], 0)


def test_redrive_copies_the_messages_back_where_the_endpoint_has_no_move_task(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given api-a's DLQ holding 23 messages (more than a receive's ten) on moto's server, which has no move task
    sent = sorted(json.dumps({"page": n}) for n in range(23))
    for body in sent:
        deployed.sqs.send_message(QueueUrl=deployed.queue("api-a", dead_letter=True), MessageBody=body)
    # When the source is redriven
    assert main(["redrive", *WHERE, "--source", "api-a", "--json"]) == 0
    # Then every message was copied to the queue and deleted from the DLQ
    document = out_json(capsys)
    assert (document["method"], document["status"], document["moved"]) == ("copy", "COMPLETED", 23)
    assert sorted(m["Body"] for m in peek(deployed.sqs, deployed.queue("api-a"))) == sent
    assert peek(deployed.sqs, deployed.queue("api-a", dead_letter=True)) == []


ATHENA_ROWS: list[list[str | None]] = [["source", "records"], ["api-a", "21"], ["api-b", None]]
ATHENA_COLUMNS = [{"Name": "source", "Type": "varchar"}, {"Name": "records", "Type": "bigint"}]


def athena_will_answer(deployed: Deployed, rows: list[list[str | None]], columns: list[dict[str, str]]) -> None:
    """The result the next query gets (moto executes nothing; its API lets a test set the rows)."""
    data = [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in rows]
    results = {"region": REGION, "results": [{"rows": data, "column_info": columns}]}
    requests.post(f"{deployed.aws.endpoint}/moto-api/static/athena/query-results", json=results, timeout=10)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_query_athena_runs_in_the_stacks_workgroup_and_prints_the_table(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the result of a SELECT: its columns in the metadata, repeated as the first row
    athena_will_answer(deployed, ATHENA_ROWS, ATHENA_COLUMNS)
    statement = "select source, count(*) as records from source_api_a group by 1"
    # When the query runs on Athena
    assert main(["query", "--athena", statement, *WHERE, *(["--json"] if as_json else [])]) == 0
    # Then it ran in the stack's workgroup and database, and the table (without the header row) is printed
    athena = boto3.client("athena", region_name=REGION)
    (execution_id,) = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["Query"] == statement and execution["QueryExecutionContext"]["Database"] == DATABASE
    if as_json:
        assert out_json(capsys) == {
            "query_execution_id": execution_id,
            "columns": ["source", "records"],
            "rows": [["api-a", "21"], ["api-b", None]],
            "truncated": False,
            "output_location": None,
            "bytes_scanned": 0,
            "cost_dollars": 0.0,
        }
    else:
        printed = capsys.readouterr().out
        assert "source | records\n-------+--------\napi-a  | 21     \napi-b  | NULL   \n(2 rows)" in printed
        assert "the result has more" not in printed
        assert f"scanned 0 bytes (about $0.0000 at $5/TB); query {execution_id} in workgroup {WORKGROUP}" in printed


@pytest.mark.parametrize(
    ("statement", "rows", "columns", "max_rows", "shown", "truncated"),
    [
        (
            "SHOW TABLES",  # DDL: no header row, every row is data
            [["source_api_a"], ["source_api_b"]],
            [{"Name": "tab_name", "Type": "string"}],
            "1000",
            {"columns": ["tab_name"], "rows": [["source_api_a"], ["source_api_b"]]},
            False,
        ),
        (
            "select source, count(*) as records from source_api_a group by 1",
            ATHENA_ROWS,
            ATHENA_COLUMNS,
            "1",
            {"columns": ["source", "records"], "rows": [["api-a", "21"]]},
            True,
        ),
    ],
    ids=["DDL rows are all data", "--max-rows cuts and says so"],
)
def test_query_athena_reads_the_columns_from_the_metadata_and_at_most_max_rows(
    deployed: Deployed,
    statement: str,
    rows: list[list[str | None]],
    columns: list[dict[str, str]],
    max_rows: str,
    shown: dict[str, list[str]],
    truncated: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the statement's result (for two runs of it)
    for _ in range(2):
        athena_will_answer(deployed, rows, columns)
    # When it runs with --max-rows
    assert main(["query", "--athena", statement, *WHERE, "--max-rows", max_rows, "--json"]) == 0
    # Then the columns are the metadata's, the rows the data (a DML result's header row dropped), no more than asked
    document = out_json(capsys)
    assert {key: document[key] for key in shown} == shown and document["truncated"] is truncated
    # And the table says when the result has more
    assert main(["query", "--athena", statement, *WHERE, "--max-rows", max_rows]) == 0
    said = "the first 1 rows only: the result has more (--max-rows reads more; all of it is in the workgroup's"
    assert (said in capsys.readouterr().out) is truncated


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_report_downloads_the_deployed_runs_report(
    deployed: Deployed,
    as_json: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two runs, the latest with its report in the bucket
    assert main([*RUN, "--run-id", "older"]) == 0
    assert main([*RUN, "--run-id", "latest"]) == 0
    for key in report_keys("latest"):
        deployed.s3.put_object(Bucket=deployed.bucket, Key=key, Body=f"<{key}>".encode())
    capsys.readouterr()
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    # When the report of the latest run is asked for, and opened
    home = tmp_path / "home"
    code = main(["--home", str(home), "report", *WHERE, "--open", *(["--json"] if as_json else [])])
    # Then both files are downloaded under <home>/reports/<run>/, their paths printed, the HTML opened
    assert code == 0
    folder = home / "reports" / "latest"
    assert (folder / "report.html").read_text() == "<ledger/runs/run=latest/report.html>"
    assert (folder / "report.json").read_text() == "<ledger/runs/run=latest/report.json>"
    if as_json:
        assert out_json(capsys) == {
            "run_id": "latest",
            "from": "bucket",
            "json": str(folder / "report.json"),
            "html": str(folder / "report.html"),
        }
    else:
        assert f"run latest: report {folder / 'report.html'}" in capsys.readouterr().out
    assert opened == [(folder / "report.html").resolve().as_uri()]
    # And --rebuild builds it now from the ledger instead, over the downloaded files
    assert main(["--home", str(home), "report", *WHERE, "--rebuild", "--json"]) == 0
    assert out_json(capsys)["from"] == "built"
    assert RunReport.model_validate_json((folder / "report.json").read_text()).run_id == "latest"
    # And an unknown run exits 2 naming the latest runs (with --json, as the command's document)
    assert main(["--home", str(home), "report", *WHERE, "--run", "nope", "--json"]) == 2
    error = out_json(capsys)["error"]
    said = f"no run 'nope' in {deployed.bucket}; the latest runs: "
    assert error.startswith(said) and sorted(error[len(said) :].split(", ")) == ["latest", "older"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_report_of_a_run_with_none_stored_is_built_now_from_the_ledger_into_home(
    deployed: Deployed, as_json: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose pages all landed, a message in api-a's DLQ, and no report in the bucket yet
    deployed.planner.then = deployed.workers_now
    assert main([*RUN, "--run-id", "fresh"]) == 0
    deployed.sqs.send_message(QueueUrl=deployed.queue("api-a", dead_letter=True), MessageBody="from another run")
    capsys.readouterr()
    # When its report is asked for
    home = tmp_path / "home"
    assert main(["--home", str(home), "report", *WHERE, "--run", "fresh", *(["--json"] if as_json else [])]) == 0
    # Then it is built now from the ledger, with the stack's DLQ depths, into <home>/reports/<run>/
    folder = home / "reports" / "fresh"
    report = RunReport.model_validate_json((folder / "report.json").read_text())
    assert (report.complete, report.pages_landed, report.records) == (True, 5, 7 + 25)
    assert {source.source: source.dlq_depth for source in report.sources} == {"api-a": 1, "api-b": 0}
    assert "fresh" in (folder / "report.html").read_text()
    if as_json:
        assert out_json(capsys) == {
            "run_id": "fresh",
            "from": "built",
            "json": str(folder / "report.json"),
            "html": str(folder / "report.html"),
        }
    else:
        printed = capsys.readouterr().out
        assert (
            f"run fresh: report built now from the ledger (no report stored yet): {folder / 'report.html'}" in printed
        )
    # And nothing was written to the bucket (an operator may only read it)
    for key in report_keys("fresh"):
        assert "Contents" not in deployed.s3.list_objects_v2(Bucket=deployed.bucket, Prefix=key)
