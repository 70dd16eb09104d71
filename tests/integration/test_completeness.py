"""The completeness check through its handler: after the nightly run (planner and workers in-process against
moto, the fake vendor on 127.0.0.1), it judges each source, emits the metrics the alarms watch and writes the
run's report; and, as under `sam local invoke --env-vars`, every function reaches AWS at APILAKE_AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from moto.server import ThreadedMotoServer

from apilake.aws import AwsClients
from apilake.config import parse_sources
from apilake.curated import create_runs_view, unload_statement
from apilake.curation import marker_key, view_statements
from apilake.names import dlq_name, queue_name
from apilake.observability import Metric
from apilake.report import report_keys
from apilake.staging import staging_prefix
from apilake_dev.local.event_source import LambdaContextStub
from apilake_dev.vendors.fake import FakeVendor
from tests.conftest import load_event, load_handler_module
from tests.integration.conftest import API_KEY, BUCKET, DATASETS, STAGE, Harness, emulated_harness, source_configs

RUN = "sched-20261126T010000Z"


def check_event(at: datetime) -> dict[str, Any]:
    """The scheduler's event (events/completeness.json) as it fires at ``at``."""
    return {**load_event("completeness.json"), "time": at.isoformat()}


CHECK_METRICS = {
    Metric.RUN_COMPLETE,
    Metric.PAGES_MISSING,
    Metric.RECORDS_LANDED,
    Metric.SOURCES_INCOMPLETE,
    Metric.SOURCES_LANDED_NOTHING,
}


def metrics_of(out: str) -> dict[tuple[str, str | None], float]:
    """The check's metrics in the EMF documents printed: (metric, its source or None for the stack's) -> value.
    (The planner's in-process metrics may be printed with them: in tests, every function shares one process.)"""
    found: dict[tuple[str, str | None], float] = {}
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                if metric["Name"] not in CHECK_METRICS:
                    continue
                value = document[metric["Name"]]
                found[(metric["Name"], document.get("source"))] = value[0] if isinstance(value, list) else value
    return found


def test_after_the_nightly_run_the_check_says_which_source_is_incomplete(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the nightly run, every source's queue drained but api-b's, and a message in api-b's DLQ
    harness.plan(load_event("planner.json"))
    for source in DATASETS:
        if source != "api-b":
            harness.drain(source)
    harness.sqs.send_message(QueueUrl=harness.dlqs["api-b"], MessageBody="a page that failed")
    capsys.readouterr()
    # When the completeness check fires seven hours later (the run is due after six)
    harness.monkeypatch.setenv("APILAKE_LAKE_BUCKET", BUCKET)
    harness.monkeypatch.setenv("APILAKE_STAGE", STAGE)
    harness.monkeypatch.setenv("APILAKE_SOURCES_FILE", str(harness.sources_path))
    handler = load_handler_module("completeness").handler
    summary = handler(check_event(datetime.now(UTC) + timedelta(hours=7)), LambdaContextStub("completeness", 120))
    # Then every source is judged on the run, api-b alone incomplete, having landed nothing
    verdicts = {verdict["source"]: verdict for verdict in summary["sources"]}
    assert set(verdicts) == set(DATASETS) and {v["run_id"] for v in verdicts.values()} == {RUN}
    assert [source for source, verdict in verdicts.items() if not verdict["complete"]] == ["api-b"]
    assert verdicts["api-b"]["pages_missing"] >= 1 and verdicts["api-b"]["records_landed"] == 0
    assert verdicts["api-a"]["records_landed"] == DATASETS["api-a"].total
    assert (summary["sources_incomplete"], summary["sources_landed_nothing"]) == (1, 1)
    # And the metrics say so: per source, and for the stack (what the alarms watch)
    emitted = metrics_of(capsys.readouterr().out)
    assert emitted[("sources_incomplete", None)] == 1 and emitted[("sources_landed_nothing", None)] == 1
    assert {source: emitted[("run_complete", source)] for source in DATASETS} == {
        source: 0 if source == "api-b" else 1 for source in DATASETS
    }
    assert emitted[("records_landed", "offsets")] == DATASETS["offsets"].total
    # And the run's report is in the ledger, with api-b's DLQ depth
    json_key, html_key = report_keys(RUN)
    report = json.loads(harness.s3.get_object(Bucket=BUCKET, Key=json_key)["Body"].read())
    assert report["complete"] is False and summary["reports"] == [RUN]
    assert {s["source"]: s["dlq_depth"] for s in report["sources"]}["api-b"] == 1
    assert harness.s3.head_object(Bucket=BUCKET, Key=html_key)["ContentType"].startswith("text/html")


def test_before_the_run_is_due_the_check_judges_nothing(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    harness.plan(load_event("planner.json"))
    capsys.readouterr()
    harness.monkeypatch.setenv("APILAKE_LAKE_BUCKET", BUCKET)
    harness.monkeypatch.setenv("APILAKE_STAGE", STAGE)
    harness.monkeypatch.setenv("APILAKE_SOURCES_FILE", str(harness.sources_path))
    handler = load_handler_module("completeness").handler
    summary = handler(check_event(datetime.now(UTC) + timedelta(hours=1)), LambdaContextStub("completeness", 120))
    assert summary["sources"] == [] and summary["not_due"] == sorted(DATASETS)
    assert metrics_of(capsys.readouterr().out) == {("sources_incomplete", None): 0, ("sources_landed_nothing", None): 0}


@pytest.fixture
def endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1, standing in for AWS as `apilake local up` starts it for `sam local invoke`.
    Its state is moto's, the process's: what the tests run before in this process (an xdist worker) left there,
    queues of the same names among it, is reset first, and what this one leaves, after."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    server.stop()


def test_the_planner_and_the_check_reach_aws_at_the_endpoint_of_the_environment(
    vendor: FakeVendor, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given, at the endpoint only, the lake bucket, the vendor's secret and api-a's queues (api-a is probed for
    # its page counts with the secret's key)
    aws = AwsClients.create(endpoint_url=endpoint)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.secrets.create_secret(Name="apilake/vendor", SecretString=API_KEY)
    queue = aws.sqs.create_queue(QueueName=queue_name(STAGE, "api-a"))["QueueUrl"]
    aws.sqs.create_queue(QueueName=dlq_name(STAGE, "api-a"))
    sources = tmp_path / "sources.yaml"
    api_a = [config for config in source_configs(vendor.base_url) if config["name"] == "api-a"]
    sources.write_text(yaml.safe_dump({"version": 1, "sources": api_a}))
    for name, value in {
        "APILAKE_AWS_ENDPOINT_URL": endpoint,
        "APILAKE_LAKE_BUCKET": BUCKET,
        "APILAKE_STAGE": STAGE,
        "APILAKE_SOURCES_FILE": str(sources),
        "APILAKE_COMPLETE_WITHIN_MINUTES": "5",
    }.items():
        monkeypatch.setenv(name, value)
    # When the planner runs, then the check ten minutes later
    planned = load_handler_module("planner").handler(load_event("planner.json"), LambdaContextStub("planner", 300))
    checked = load_handler_module("completeness").handler(
        check_event(datetime.now(UTC) + timedelta(minutes=10)), LambdaContextStub("completeness", 120)
    )
    # Then the planner read the secret, wrote the manifest and sent api-a's pages there
    assert planned["errors"] == {} and planned["messages"]["api-a"] == 9
    depth = aws.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "9"
    # And the check judged the run there (nothing landed yet) and wrote its report there
    assert [(v["source"], v["complete"], v["pages_missing"]) for v in checked["sources"]] == [("api-a", False, 9)]
    aws.s3.head_object(Bucket=BUCKET, Key=report_keys(RUN)[0])


def test_after_a_run_complete_for_a_source_with_columns_the_check_curates_it_in_athena(
    vendor: FakeVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given api-c declaring columns, the stack's workgroup, and the nightly run, api-c's queue drained
    configs = [
        {**c, "columns": {"id": "string"}} if c["name"] == "api-c" else c for c in source_configs(vendor.base_url)
    ]
    with emulated_harness(vendor, configs, tmp_path, monkeypatch) as harness:
        athena = boto3.client("athena", region_name="us-east-1")
        athena.create_work_group(Name="apilake-test", Configuration={})
        harness.plan(load_event("planner.json"))
        harness.drain("api-c")
        for name, value in {
            "APILAKE_LAKE_BUCKET": BUCKET,
            "APILAKE_STAGE": STAGE,
            "APILAKE_SOURCES_FILE": str(harness.sources_path),
            "APILAKE_ATHENA_WORKGROUP": "apilake-test",
            "APILAKE_GLUE_DATABASE": "apilake_test",
        }.items():
            monkeypatch.setenv(name, value)
        handler = load_handler_module("completeness").handler
        # When the check fires seven hours later, then a quarter of an hour after
        now = datetime.now(UTC) + timedelta(hours=7)
        first = handler(check_event(now), LambdaContextStub("completeness", 120))
        second = handler(check_event(now + timedelta(minutes=15)), LambdaContextStub("completeness", 120))
        # Then the first created the view over every run and started the UNLOAD of api-c's date (the run's) in the
        # workgroup (into its staging prefix), the only complete source with columns; the second found it done
        # (moto's Athena runs nothing) and created api-c's views
        api_c = parse_sources(yaml.safe_load(harness.sources_path.read_text()), "sources.yaml").get("api-c")
        [run] = first["curation"]["runs"]
        day = date.fromisoformat(run["ingestion_date"])
        assert (run["source"], run["run_id"], run["state"]) == ("api-c", RUN, "running")
        started = [
            athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            for query_id in athena.list_query_executions(WorkGroup="apilake-test")["QueryExecutionIds"]
        ]
        assert sorted(execution["Query"] for execution in started) == sorted(
            [
                create_runs_view(),
                unload_statement(api_c, day, BUCKET, staging_prefix("api-c", day, RUN, 1)),
                *view_statements(api_c),
            ]
        )
        assert {execution["QueryExecutionContext"]["Database"] for execution in started} == {"apilake_test"}
        assert second["curation"]["runs"][0]["state"] == "done" and second["curation"]["views"] == {
            "": "done",
            "api-c": "running",
        }
        marker = json.loads(harness.s3.get_object(Bucket=BUCKET, Key=marker_key("api-c", RUN))["Body"].read())
        assert marker["state"] == "done"
