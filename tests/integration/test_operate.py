"""The operator commands that start runs (run, backfill, --follow), and the on-call path, against a deployed
stack played by moto's server on 127.0.0.1: a CloudFormation
stack (created in moto) holds the lake bucket and each source's queue and DLQ, and the outputs the commands
read. The planner function cannot run in moto (no Docker): the command's Lambda client is a stand-in that
calls functions/planner/app.py's handler in this process, against the same moto server; the workers are
driven in-process by the local SQS event source, in the background, as Lambda would."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config

import apilake_cli.stack
from apilake.ledger import Ledger
from apilake.names import dlq_name, pascal, queue_name
from apilake_cli.main import main
from apilake_dev.local.aws import LocalAws
from apilake_dev.local.event_source import LambdaContextStub, SqsEventSource
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault
from tests.conftest import load_handler_module

STACK, STAGE, REGION = "apilake-test", "test", "us-east-1"
PLANNER = "apilake-test-planner"
WORKGROUP, DATABASE = "apilake-test", "apilake_test"
SOURCES = ("api-a", "api-b")
WHERE = ["--stack-name", STACK, "--region", REGION]
RUN = ["run", *WHERE, "--ingestion-date", "2026-11-26"]
# api-a: 7 records a day on 2026-11-23..25, pages of 5 (2 a day); api-b: 25 records, a cursor chain of 3 pages.
DATASETS = [Dataset("ds-a", total=21, days=3), Dataset("ds-b", total=25)]


def sources_file(base_url: str, folder: Path) -> Path:
    common = {
        "base_url": base_url,
        "retries": {"max_attempts": 1, "base_delay_seconds": 0.01, "max_delay_seconds": 1},
        "timeouts": {"connect_seconds": 2, "read_seconds": 2},
    }
    sources = [
        {
            **common,
            "name": "api-a",
            "path": "/page_number/ds-a",
            "records_path": "data",
            "pagination": {"type": "page_number", "page_size": 5, "total_path": "meta.total"},
            "sharding": {"type": "daily", "start_param": "since", "end_param": "until", "lookback_days": 1},
        },
        {
            **common,
            "name": "api-b",
            "path": "/cursor/ds-b",
            "params": {"limit": "10"},
            "records_path": "results",
            "pagination": {"type": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more"},
        },
    ]
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": sources}, sort_keys=False))
    return path


def stack_template() -> dict[str, Any]:
    """The deployed stack's shape as far as the commands see it: the lake bucket, each source's queue with
    its DLQ (named as template.yaml names them), and the outputs (the functions, workgroup and database by name)."""
    resources: dict[str, Any] = {"LakeBucket": {"Type": "AWS::S3::Bucket"}}
    for source in SOURCES:
        dlq = f"{pascal(source)}DeadLetterQueue"
        resources[dlq] = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": dlq_name(STAGE, source)}}
        resources[f"{pascal(source)}Queue"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": queue_name(STAGE, source),
                "VisibilityTimeout": 1,
                "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 1},
            },
        }
    outputs = {
        "LakeBucketName": {"Ref": "LakeBucket"},
        "StageName": {"Ref": "Stage"},
        "PlannerFunctionName": PLANNER,
        "AthenaWorkGroupName": WORKGROUP,
        "GlueDatabaseName": DATABASE,
    }
    return {
        "Parameters": {"Stage": {"Type": "String", "Default": STAGE}},
        "Resources": resources,
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }


@dataclass
class PlannerLambda:
    """The stack's planner as ``lambda.invoke`` reaches it: the handler in this process, its environment
    the deployed one; an exception is Lambda's ``FunctionError`` with the error's type and message.
    ``then``: what runs after a successful plan (the workers, as the queues' event sources would)."""

    environment: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    then: Callable[[], None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    config: Config | None = None

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        assert (FunctionName, InvocationType) == (PLANNER, "RequestResponse")
        event = json.loads(Payload)
        self.events.append(event)
        for name, value in self.environment.items():
            self.monkeypatch.setenv(name, value)
        try:
            # Its stdout is its log stream (EMF documents included), not the operator's terminal.
            with contextlib.redirect_stdout(io.StringIO()):
                answer = load_handler_module("planner").handler(event, LambdaContextStub(PLANNER, 300))
        except Exception as exc:  # what Lambda does with an unhandled error
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(error).encode())}
        if self.then is not None:
            self.then()
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


@dataclass
class Deployed:
    aws: LocalAws
    s3: Any
    sqs: Any
    bucket: str
    sources_path: Path
    vendor: FakeVendor
    planner: PlannerLambda
    monkeypatch: pytest.MonkeyPatch
    workers: list[threading.Thread] = field(default_factory=list)

    def queue(self, source: str, dead_letter: bool = False) -> str:
        name = (dlq_name if dead_letter else queue_name)(STAGE, source)
        url: str = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        return url

    def drain(self) -> None:
        """Each source's queue through the worker handler until both are empty (the event sources' work)."""
        worker = load_handler_module("worker")
        for source in SOURCES:
            environment = {
                "APILAKE_SOURCE": source,
                "APILAKE_LAKE_BUCKET": self.bucket,
                "APILAKE_QUEUE_URL": self.queue(source),
                "APILAKE_SOURCES_FILE": str(self.sources_path),
            }

            def invoke(event: dict[str, Any], context: Any, env: dict[str, str] = environment) -> Any:
                for name, value in env.items():
                    self.monkeypatch.setenv(name, value)
                return worker.handler(event, context)

            SqsEventSource(self.sqs, self.queue(source), invoke, f"worker-{source}").drain(max_seconds=60)

    def workers_now(self) -> None:
        """After the plan, the workers drain the queues before the planner's answer returns (their stdout, a
        Lambda's log stream with its cold-start EMF document, kept off the command's)."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.drain()

    def workers_in_background(self) -> None:
        """After the plan, the workers drain the queues in a thread of their own while the command follows."""
        thread = threading.Thread(target=self.drain, name="workers", daemon=True)
        self.workers.append(thread)
        thread.start()

    def join_workers(self) -> None:
        for thread in self.workers:
            thread.join(timeout=120)
            assert not thread.is_alive(), "the workers did not drain the queues in 120 s"

    def ledger(self) -> Ledger:
        return Ledger(self.s3, self.bucket)


@pytest.fixture(name="deployed")
def deployed_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    with LocalAws() as aws, FakeVendor(DATASETS) as vendor:
        # Every client of this process (the command's, the handlers') talks to moto's server.
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(stack_template()))
        outputs = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        bucket = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "LakeBucketName")
        boto3.client("athena", region_name=REGION).create_work_group(Name=WORKGROUP, Configuration={})
        sources_path = sources_file(vendor.base_url, tmp_path)
        # As the local deployment does: no EMF documents on stdout, where the command prints its own; and
        # the handlers' logs only from warnings up.
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        monkeypatch.setenv("APILAKE_LOG_LEVEL", "WARNING")
        environment = {
            "APILAKE_LAKE_BUCKET": bucket,
            "APILAKE_STAGE": STAGE,
            "APILAKE_SOURCES_FILE": str(sources_path),
        }
        planner = PlannerLambda(environment, monkeypatch)
        built = Deployed(
            aws=aws,
            s3=boto3.client("s3", region_name=REGION),
            sqs=boto3.client("sqs", region_name=REGION),
            bucket=bucket,
            sources_path=sources_path,
            vendor=vendor,
            planner=planner,
            monkeypatch=monkeypatch,
        )

        class StackSession(boto3.Session):
            """The command's AWS session: moto's server for every service but Lambda, the stand-in for it."""

            def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
                if service_name == "lambda":
                    planner.config = kwargs.get("config")
                    return planner
                return super().client(service_name, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(
            apilake_cli.stack,
            "new_session",
            lambda profile, region: StackSession(profile_name=profile, region_name=region),
        )
        yield built
        built.join_workers()


def out_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


# -- run, backfill ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_run_invokes_the_planner_and_prints_the_run_and_its_plan(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a run of both sources is started on the stack, with its id and ingestion date
    code = main([*RUN, "--sources", "api-a,api-b", "--run-id", "my-run", *(["--json"] if as_json else [])])
    # Then the planner got the manual event, synchronously, with a read timeout above its own 300 s
    assert code == 0
    assert deployed.planner.events == [
        {"sources": ["api-a", "api-b"], "ingestion_date": "2026-11-26", "run_id": "my-run"}
    ]
    config = deployed.planner.config
    assert config is not None and config.read_timeout > 300  # type: ignore[attr-defined]
    # And the run id and the plan are printed: api-a's shard 2026-11-25 holds 7 records (2 pages), api-b a chain
    # And where its report will be: the command that shows it, the keys the completeness check writes
    report = f"s3://{deployed.bucket}/ledger/runs/run=my-run/report.html"
    if as_json:
        document = out_json(capsys)
        assert document["run_id"] == "my-run" and document["follow"] is None and document["error"] is None
        assert document["messages"] == {"api-a": 2, "api-b": 1} and document["errors"] == {}
        assert document["report"]["command"] == f"apilake report --run my-run --stack-name {STACK}"
        assert document["report"]["html"] == report
    else:
        printed = capsys.readouterr().out
        assert "run my-run planned (ingestion date 2026-11-26)" in printed
        assert "api-a  | 2" in printed and "api-b  | 1" in printed
        assert printed.splitlines()[-2:] == [
            f"its report: apilake report --run my-run --stack-name {STACK}",
            f"  (the completeness check writes it to {report}; until then the command builds it from the ledger)",
        ]
    # And the ledger holds the run's manifest
    manifest = deployed.ledger().read_manifest("my-run")
    assert manifest is not None and sorted(manifest.sources) == ["api-a", "api-b"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_run_follow_watches_the_pages_land_until_the_run_is_complete(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given workers that drain the queues once the planner has planned (while the command follows; with --json,
    # where stdout must hold the command's document only, before the planner's answer returns)
    deployed.planner.then = deployed.workers_now if as_json else deployed.workers_in_background
    # When the run is started and followed
    args = [*RUN, "--run-id", "nightly", "--follow", "--interval", "0.2", "--timeout", "120"]
    code = main([*args, *(["--json"] if as_json else [])])
    captured = capsys.readouterr()
    # Then it ends complete (exit 0), having shown each source's pages and queues as they changed
    assert code == 0, captured
    progress = captured.err if as_json else captured.out
    assert "api-a: 2/2 pages" in progress and "api-b: 3/3 pages" in progress
    assert "queue 0 waiting, 0 in flight, 0 delayed  DLQ (all runs) 0" in progress
    if as_json:
        follow = json.loads(captured.out)["follow"]
        assert follow["outcome"] == "complete" and follow["status"]["complete"] is True
        pages = {s["source"]: (s["pages_landed"], s["pages_expected"]) for s in follow["status"]["sources"]}
        assert pages == {"api-a": (2, 2), "api-b": (3, 3)}
    else:
        assert "run nightly: complete after" in captured.out
        assert "run nightly (ingestion date 2026-11-26): complete: yes" in captured.out


def test_run_follow_stops_when_the_run_settles_incomplete_and_on_call_finds_and_fixes_it(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a vendor that answers api-a's page 2 with 404, and workers draining the queues
    deployed.vendor.inject("page_number", "ds-a", 2, Fault("status", status=404), forever=True)
    deployed.planner.then = deployed.workers_in_background
    # When the run is followed: its queues empty, page 2 in the DLQ
    follow = [*RUN, "--run-id", "nightly", "--follow", "--interval", "0.2", "--timeout", "120"]
    assert main(follow) == 1
    deployed.join_workers()
    printed = capsys.readouterr().out
    # Then it stops without waiting for the timeout, settled incomplete, and says where to look
    assert "run nightly: settled INCOMPLETE" in printed and "(DLQs, all runs: 1 message(s))" in printed
    assert "api-a: INCOMPLETE, DLQ (all runs): 1 message(s)" in printed
    assert printed.splitlines()[-2] == f"its report: apilake report --run nightly --stack-name {STACK}"
    # And status says the same (exit 1), with the DLQ's depth
    assert main(["status", *WHERE, "--run", "nightly"]) == 1
    assert "missing page 2: PermanentHttpError" in capsys.readouterr().out
    # And dlq peek shows the page, left in place, with the reason of its last failure (exit 1: messages left)
    assert main(["dlq", "peek", *WHERE, "--source", "api-a", "--json"]) == 1
    (message,) = out_json(capsys)["messages"]
    assert (message["run_id"], message["shard"], message["page"]) == ("nightly", "2026-11-25", 2)
    assert message["last_failure"]["error"] == "PermanentHttpError" and "404" in message["last_failure"]["reason"]
    assert main(["dlq", "peek", *WHERE, "--source", "api-a"]) == 1
    assert "run nightly shard 2026-11-25 page 2: received" in capsys.readouterr().out
    # When the vendor is fixed and the DLQ redriven (moto has no move task: the messages are copied back)
    deployed.vendor.clear("page_number", "ds-a", 2)
    assert main(["redrive", *WHERE, "--source", "api-a"]) == 0
    assert "api-a: moved 1 message(s) apilake-test-api-a-dlq -> apilake-test-api-a (copied" in capsys.readouterr().out
    deployed.drain()
    # Then the run is complete, the DLQ empty
    assert main(["status", *WHERE, "--run", "nightly", "--json"]) == 0
    document = out_json(capsys)
    assert document["complete"] is True
    assert [s["dlq_messages"] for s in document["sources"]] == [0, 0]
    assert main(["dlq", "peek", *WHERE, "--source", "api-a", "--json"]) == 0
    assert out_json(capsys)["messages"] == []


def test_run_follow_times_out_while_the_run_is_not_complete(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no worker: the planned pages wait in their queues
    # When the run is followed for no time at all
    assert main([*RUN, "--run-id", "stuck", "--follow", "--timeout", "0", "--json"]) == 3
    # Then it exits 3 with what it saw: nothing landed, the pages waiting
    follow = out_json(capsys)["follow"]
    assert follow["outcome"] == "timed_out" and follow["status"]["complete"] is False
    assert {s["source"]: s["pages_landed"] for s in follow["status"]["sources"]} == {"api-a": 0, "api-b": 0}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_partly_planned_run_exits_2_with_its_run_what_was_not_planned_and_why(
    deployed: Deployed, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose api-b queue is gone: the planner plans api-a, writes the manifest, then fails
    deployed.sqs.delete_queue(QueueUrl=deployed.queue("api-b"))
    # When a run of both is started without a run id
    code = main([*RUN, "--sources", "api-a,api-b", *(["--json"] if as_json else [])])
    # Then it exits 2 with the planner's error; the run id is the one the command chose and sent
    assert code == 2
    (event,) = deployed.planner.events
    run_id = event["run_id"]
    assert run_id.startswith("manual-")
    captured = capsys.readouterr()
    assert f"the planner ({PLANNER}) failed: PlanningError: run {run_id}: some sources were not planned" in captured.err
    # And it names the run, what was not planned and why (from the run's manifest), and where to follow it
    if as_json:
        document = json.loads(captured.out)
        assert (document["run_id"], document["ingestion_date"], document["messages"]) == (run_id, "2026-11-26", None)
        assert list(document["errors"]) == ["api-b"] and "apilake-test-api-b" in document["errors"]["api-b"]
        assert document["error"].startswith(f"the planner ({PLANNER}) failed: PlanningError")
        assert document["report"]["command"] == f"apilake report --run {run_id} --stack-name {STACK}"
    else:
        assert (
            f"run {run_id} PARTLY planned (ingestion date 2026-11-26): planned api-a\n  api-b: NOT planned: shard all"
            in (captured.out)
        )
        assert f"follow it: apilake status --run {run_id} --stack-name {STACK}" in captured.out


def test_a_planner_error_before_any_plan_gives_the_run_id_and_the_error_as_json(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*RUN, "--sources", "api-zz", "--run-id", "typo", "--json"]) == 2
    document = out_json(capsys)
    assert (document["run_id"], document["errors"], document["report"]) == ("typo", {}, None)
    assert "ConfigError: unknown source 'api-zz'; declared: api-a, api-b" in document["error"]


@pytest.mark.parametrize(
    "command",
    [[*RUN], ["backfill", *WHERE, "--sources", "api-a", "--from", "2026-11-23", "--to", "2026-11-25"]],
    ids=["run", "backfill"],
)
def test_a_run_id_of_the_scheduled_kind_is_refused_before_the_planner_runs(
    deployed: Deployed, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # When a manual run is given a scheduled run's id
    assert main([*command, "--run-id", "sched-20261126T010000Z", "--json"]) == 2
    # Then the command refuses it, saying why; the planner was not invoked, no manifest written
    captured = capsys.readouterr()
    error = "--run-id sched-20261126T010000Z: ids starting with 'sched-' are the scheduled runs'"
    assert error in captured.err and error in json.loads(captured.out)["error"]
    assert deployed.planner.events == [] and deployed.ledger().read_manifest("sched-20261126T010000Z") is None


def test_backfill_plans_the_date_shards_of_the_window(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    # When api-a is backfilled over three days
    args = ["backfill", *WHERE, "--sources", "api-a", "--from", "2026-11-23", "--to", "2026-11-25", "--json"]
    assert main([*args, "--run-id", "backfill-w1"]) == 0
    # Then the planner got the window and planned a shard per day
    assert deployed.planner.events[-1] == {
        "sources": ["api-a"],
        "shard_from": "2026-11-23",
        "shard_to": "2026-11-25",
        "run_id": "backfill-w1",
    }
    assert out_json(capsys)["messages"] == {"api-a": 6}
    manifest = deployed.ledger().read_manifest("backfill-w1")
    assert manifest is not None
    assert [s.shard for s in manifest.sources["api-a"].shards] == ["2026-11-23", "2026-11-24", "2026-11-25"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["run", "--sources", "api-a"],
            "run needs --local (the flow on this machine) or --stack-name (a deployed stack)",
        ),
        (
            ["run", "--local", *WHERE],
            "run: give --local (the flow on this machine) or --stack-name (a deployed stack), not both",
        ),
        (["run", *WHERE, "--event", "e.json"], "run --stack-name: --event is not for --stack-name"),
        (["run", "--local", "--follow"], "run --local: --follow is not for --local"),
        (["run", *WHERE, "--until", "5"], "planner event: (event): Value error, until needs since"),
        (
            ["backfill", *WHERE, "--sources", "api-a", "--from", "2026-11-25", "--to", "2026-11-23"],
            "shard_to is before shard_from\n  from the options: --sources ['api-a'] --from 2026-11-25 --to 2026-11-23",
        ),
        (["run", *WHERE, "--sources", " , "], "--sources: expected source names separated by commas, got ' , '"),
        (
            ["run", "--stack-name", "apilake-nope", "--region", REGION],
            "no stack 'apilake-nope' in us-east-1: Stack with id apilake-nope does not exist",
        ),
        (
            ["run", *WHERE, "--sources", "api-zz"],
            f"the planner ({PLANNER}) failed: ConfigError: unknown source 'api-zz'; declared: api-a, api-b",
        ),
        (
            ["dlq", "peek", *WHERE, "--source", "api-zz"],
            "stack apilake-test has no source 'api-zz': no queue apilake-test-api-zz-dlq in us-east-1",
        ),
        (["query", "--athena", "select 1"], "query --athena needs --stack-name"),
        (["query", "--json", "select 1"], "query: --json only with --athena"),
        (["query", "--max-rows", "5", "select 1"], "query: --max-rows only with --athena"),
        (["status", *WHERE, "--bucket", "b"], "give --stack-name or --bucket, not both"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_input_exits_2_naming_the_problem(
    deployed: Deployed, args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["backfill", *WHERE, "--sources", "api-a", "--from", "2026-11-25"],
            "the following arguments are required: --to",
        ),
        (
            ["backfill", *WHERE, "--sources", "api-a", "--from", "25/11", "--to", "2026-11-25"],
            "expected a date as YYYY-MM-DD",
        ),
        (["dlq", "peek", "--source", "api-a"], "the following arguments are required: --stack-name"),
        (["redrive", *WHERE], "the following arguments are required: --source"),
        (["query", "--athena", *WHERE, "--max-rows", "0", "select 1"], "expected a whole number of 1 or more, got '0'"),
    ],
)
def test_options_argparse_refuses_exit_2(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err
