"""`apilake local up` and `sam local invoke --env-vars`: the file read by SAM CLI's own code.

No Docker here, so SAM CLI stops short of the container: its providers load template.yaml as
`sam local invoke` does (SamLocalStackProvider, SamFunctionProvider), its LocalLambdaRunner builds each
function's environment from the template and the env-vars file (EnvironmentVariables.resolve), and the
handlers run in-process with exactly that environment against the stand-in `local up` started, the
example sources pointed at fake vendors on 127.0.0.1 (as the demo does).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from yaml.constructor import SafeConstructor

from apilake.aws import cached_sources, default_clients, default_queue_locator, default_vendor_clients
from apilake.exceptions import ApilakeError
from apilake.lake import page_key
from apilake.messages import WorkItem
from apilake.names import dlq_name, queue_name
from apilake_cli import develop
from apilake_dev import demo, paths
from apilake_dev.local.event_source import LambdaContextStub, sqs_event
from apilake_dev.local.sam_local import ENDPOINT_VARIABLE, LocalUp
from apilake_dev.vendors.fake import FakeVendor
from tests.conftest import load_event, load_handler_module

# Variables of the test process that would reach a handler's environment; SAM CLI's container has only its own.
FOREIGN = ("AWS_", "APILAKE_", "POWERTOOLS_")
SCALE = 0.05  # of the demo's data: one page of api-a (60 records)


@contextmanager
def yaml_left_as_it_was() -> Iterator[None]:
    """SAM CLI's template parser (samcli.yamlhelper.yaml_parse) changes PyYAML's SafeLoader for the whole
    process (mappings as OrderedDict, timestamps as strings, any ``!`` tag): undone after it, for the
    rest of the tests."""
    tables = ("yaml_constructors", "yaml_multi_constructors")
    saved = {(cls, table): cls.__dict__.get(table) for cls in (yaml.SafeLoader, SafeConstructor) for table in tables}
    copies = {key: dict(value) for key, value in saved.items() if value is not None}
    try:
        yield
    finally:
        for (cls, table), value in saved.items():
            if value is None:
                if table in cls.__dict__:
                    delattr(cls, table)
            else:
                value.clear()
                value.update(copies[(cls, table)])
                setattr(cls, table, value)


@pytest.fixture(scope="module")
def sam_functions() -> SamFunctionProvider:
    """template.yaml's functions as `sam local invoke` loads them."""
    with yaml_left_as_it_was():
        stacks, _ = SamLocalStackProvider.get_stacks(str(paths.TEMPLATE), parameter_overrides={})
        return SamFunctionProvider(stacks, use_raw_codeuri=True)


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalUp]:
    """`local up` on a free port, reached at 127.0.0.1, with the example sources at fake vendors."""
    for name in [name for name in os.environ if name.startswith("APILAKE_")]:
        monkeypatch.delenv(name)  # a shell's value would win over the template's in SAM CLI
    protected = demo.authenticated(demo.EXAMPLE_SOURCES)
    with FakeVendor(demo.datasets(SCALE), api_key=demo.DEMO_KEY, protected=set(protected)) as vendor:
        sources = demo.demo_sources(vendor, tmp_path / "sources.yaml")
        with LocalUp(
            tmp_path / "sam-env-vars.json",
            sources_file=sources,
            port=0,
            endpoint_host="127.0.0.1",
            secrets=dict.fromkeys(protected.values(), demo.DEMO_KEY),
        ) as up:
            yield up


def resolved_environment(functions: SamFunctionProvider, function: str, env_vars_file: Path) -> dict[str, str]:
    """The environment `sam local invoke <function> --env-vars <file>` gives the function's container."""
    runner = LocalLambdaRunner(
        local_runtime=None,  # building the invoke configuration starts no container
        function_provider=functions,
        cwd=str(paths.ROOT),
        real_path=str(paths.ROOT),
        env_vars_values=json.loads(env_vars_file.read_text()),
    )
    environment: dict[str, str] = runner.get_invoke_config(functions.get(function)).env_vars.resolve()
    return environment


def enter_container(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """This process's environment made the container's, and a cold start: no cached clients or sources."""
    for name in [name for name in os.environ if name.startswith(FOREIGN)]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for cached in (cached_sources, default_clients, default_vendor_clients, default_queue_locator):
        cached.cache_clear()


def test_the_file_names_each_function_of_the_template_with_only_variables_it_declares(
    stand_in: LocalUp, sam_functions: SamFunctionProvider
) -> None:
    # Given the env-vars file `local up` wrote, and the functions SAM CLI finds in template.yaml
    written = json.loads(stand_in.env_vars_file.read_text())
    functions = {function.name: function for function in sam_functions.get_all()}
    # Then it names every function by its logical id, and no other
    assert sorted(written) == sorted(functions)
    assert {"Planner", "Completeness", "ApiAWorker"} <= set(written)
    # And sets only variables the function declares (SAM CLI passes no other), the endpoint among them
    for name, variables in written.items():
        declared = set(functions[name].environment["Variables"])
        assert set(variables) <= declared, f"{name}: {sorted(set(variables) - declared)} not declared"
        assert variables[ENDPOINT_VARIABLE] == stand_in.endpoint_url


def test_sam_cli_gives_each_function_an_environment_that_reaches_the_stand_in(
    stand_in: LocalUp, sam_functions: SamFunctionProvider
) -> None:
    s3, sqs = stand_in.aws.client("s3"), stand_in.aws.client("sqs")
    workers = {worker.function: worker.source for worker in stand_in.deployment.workers}
    for function in stand_in.env_vars:
        # When SAM CLI builds the function's environment from the template and the file
        environment = resolved_environment(sam_functions, function, stand_in.env_vars_file)
        # Then it points at the running server: its bucket, its stage's queues, the sources file
        assert environment[ENDPOINT_VARIABLE] == stand_in.aws.endpoint
        s3.head_bucket(Bucket=environment["APILAKE_LAKE_BUCKET"])
        stage = environment["APILAKE_STAGE"]
        for source in workers.values():
            sqs.get_queue_url(QueueName=queue_name(stage, source))
            sqs.get_queue_url(QueueName=dlq_name(stage, source))
        assert environment["APILAKE_SOURCES_FILE"] == str(stand_in.sources_file)
        # And a worker's queue URL is its source's queue
        if function in workers:
            assert environment["APILAKE_SOURCE"] == workers[function]
            attributes = sqs.get_queue_attributes(QueueUrl=environment["APILAKE_QUEUE_URL"], AttributeNames=["All"])
            assert attributes["Attributes"]["QueueArn"].endswith(f":{queue_name(stage, workers[function])}")


def test_the_handlers_run_with_that_environment_plan_land_and_judge_a_run(
    stand_in: LocalUp, sam_functions: SamFunctionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, sqs = stand_in.aws.client("s3"), stand_in.aws.client("sqs")
    bucket = stand_in.deployment.bucket
    # Given the planner's environment as SAM CLI builds it, when the planner runs with events/planner.json
    enter_container(monkeypatch, resolved_environment(sam_functions, "Planner", stand_in.env_vars_file))
    planned = load_handler_module("planner").handler(load_event("planner.json"), LambdaContextStub("Planner", 300))
    # Then it planned every example source into the stand-in's queues
    assert sorted(planned["messages"]) == sorted(w.source for w in stand_in.deployment.workers)
    assert all(count >= 1 for count in planned["messages"].values())

    # When ApiAWorker, in its environment, gets a message the planner enqueued (as its event source would)
    api_a = next(w for w in stand_in.deployment.workers if w.source == "api-a")
    received = sqs.receive_message(QueueUrl=api_a.queue_url, MaxNumberOfMessages=1, AttributeNames=["All"])
    arn = sqs.get_queue_attributes(QueueUrl=api_a.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    enter_container(monkeypatch, resolved_environment(sam_functions, api_a.function, stand_in.env_vars_file))
    result = load_handler_module("worker").handler(
        sqs_event(received["Messages"], arn), LambdaContextStub(api_a.function, 300)
    )
    # Then the page landed in the stand-in's lake, the fake vendor's records of its shard
    assert result == {"batchItemFailures": []}
    item = WorkItem.model_validate_json(received["Messages"][0]["Body"])
    key = page_key("api-a", item.ingestion_date, item.shard, item.page)
    records = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    dataset = next(d for d in demo.datasets(SCALE) if d.name == "api-a")
    day = date.fromisoformat(item.shard)
    assert [json.loads(line) for line in records] == dataset.records(item.shard, str(day + timedelta(days=1)))

    # When the completeness check runs with events/completeness.json, its time past the run's due time
    enter_container(monkeypatch, resolved_environment(sam_functions, "Completeness", stand_in.env_vars_file))
    event = {**load_event("completeness.json"), "time": (datetime.now(UTC) + timedelta(hours=7)).isoformat()}
    judged: dict[str, Any] = load_handler_module("completeness").handler(event, LambdaContextStub("Completeness", 300))
    # Then it judged the run from the stand-in's ledger: api-a complete with its page, the others landed nothing
    verdicts = {verdict["source"]: verdict for verdict in judged["sources"]}
    assert {verdict["run_id"] for verdict in verdicts.values()} == {planned["run_id"]}
    assert (verdicts["api-a"]["complete"], verdicts["api-a"]["records_landed"]) == (True, len(records))
    assert judged["sources_incomplete"] == judged["sources_landed_nothing"] == len(verdicts) - 1
    assert judged["reports"] == [planned["run_id"]]


def test_local_up_prints_what_to_run_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given `apilake local up` on a free port, Ctrl-C pressed as soon as it waits
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=tmp_path)
    develop.add_local_commands(parser.add_subparsers())
    args = parser.parse_args(["local", "up", "--port", "0"])
    monkeypatch.setattr(develop, "wait_for_interrupt", lambda: None)
    # When it runs
    code = args.func(args)
    # Then it wrote the env-vars file under the home folder, for the template's functions
    written = json.loads((tmp_path / "sam-env-vars.json").read_text())
    assert "Planner" in written and "ApiAWorker" in written
    assert written["Planner"]["APILAKE_SOURCES_FILE"] == "/opt/python/sources.yaml"
    assert written["Planner"][ENDPOINT_VARIABLE].startswith("http://host.docker.internal:")
    # And printed the sam local invoke commands with that file, then stopped cleanly
    out = capsys.readouterr().out
    for function, event in [("Planner", "planner"), ("ApiAWorker", "worker"), ("Completeness", "completeness")]:
        assert f"sam local invoke {function} -e events/{event}.json --env-vars {tmp_path / 'sam-env-vars.json'}" in out
    assert code == 0 and out.rstrip().endswith("stopped")


def test_local_up_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    # Given a port of 127.0.0.1 something listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Then local up on it fails at once, naming the address and the options to change
        with (
            pytest.raises(ApilakeError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .* \(--port, --bind\)"),
            LocalUp(tmp_path / "env.json", port=port),
        ):
            pass
    assert not (tmp_path / "env.json").exists()
