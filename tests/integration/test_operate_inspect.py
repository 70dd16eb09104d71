"""The operator commands that look and repair (status, dlq peek, redrive, query --athena, report) against the
deployed stack of test_operate.py (moto's server)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import requests

from apilake.messages import WorkItem
from apilake.report import report_keys
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
    # Then each source says its DLQ's depth
    printed = capsys.readouterr().out
    assert "api-a: INCOMPLETE, DLQ: 0 message(s)" in printed and "api-b: INCOMPLETE, DLQ: 2 message(s)" in printed
    assert main(["status", *WHERE, "--json"]) == 1
    document = out_json(capsys)
    assert {s["source"]: s["dlq_messages"] for s in document["sources"]} == {"api-a": 0, "api-b": 2}
    assert document["run_id"] == "one" and document["complete"] is False


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


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_query_athena_runs_in_the_stacks_workgroup_and_prints_the_table(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the result Athena will give (moto executes nothing; its API lets a test set the rows)
    rows = [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in ATHENA_ROWS]
    results = {"region": REGION, "results": [{"rows": rows, "column_info": []}]}
    requests.post(f"{deployed.aws.endpoint}/moto-api/static/athena/query-results", json=results, timeout=10)
    statement = "select source, count(*) as records from source_api_a group by 1"
    # When the query runs on Athena
    assert main(["query", "--athena", statement, *WHERE, *(["--json"] if as_json else [])]) == 0
    # Then it ran in the stack's workgroup and database, and the table (header from the first row) is printed
    athena = boto3.client("athena", region_name=REGION)
    (execution_id,) = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["Query"] == statement and execution["QueryExecutionContext"]["Database"] == DATABASE
    if as_json:
        assert out_json(capsys) == {
            "query_execution_id": execution_id,
            "columns": ["source", "records"],
            "rows": [["api-a", "21"], ["api-b", None]],
            "bytes_scanned": 0,
            "cost_dollars": 0.0,
        }
    else:
        printed = capsys.readouterr().out
        assert "source | records\n-------+--------\napi-a  | 21     \napi-b  | NULL   \n(2 rows)" in printed
        assert f"scanned 0 bytes (about $0.0000 at $5/TB); query {execution_id} in workgroup {WORKGROUP}" in printed


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
    # And a run without a report yet exits 1, saying who writes it
    assert main(["--home", str(home), "report", *WHERE, "--run", "older"]) == 1
    assert "no report of run older yet (s3://" in capsys.readouterr().err
