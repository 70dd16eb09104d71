"""The operator install: a wheel of the project in a fresh venv with its dependencies only (`pip install .`,
no extras) gives an `apilake` whose status and redrive work against AWS (moto's server here) without
DuckDB, moto or the SAM CLI, and whose dev commands say which install they need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from apilake.names import dlq_name, queue_name
from tests.template.conftest import ROOT
from tests.unit.test_cli import RUN, write_run

pytestmark = pytest.mark.slow

UV = ROOT / ".tools" / "bin" / "uv"  # `make env` installs it
DEV_PACKAGES = ("duckdb", "moto", "samcli", "cfnlint", "sqlglot")  # jinja2 is the run report's, at run time


def run(
    *command: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv (the project's Python) with the project's wheel and its dependencies
    only (versions as in the lock, so that uv's cache has them)."""
    work = tmp_path_factory.mktemp("operator-install")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    built = run(UV, "build", "--wheel", "--out-dir", work / "dist", ROOT, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("apilake-*.whl")
    created = run(UV, "venv", "--python", sys.executable, work / "venv", env=env)
    assert created.returncode == 0, created.stderr
    python = work / "venv" / "bin" / "python"
    lock = ROOT / "requirements-dev.lock"
    installed = run(UV, "pip", "install", "--python", python, "--constraint", lock, wheel, env=env)
    assert installed.returncode == 0, installed.stderr
    return python.parent


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def apilake(
    venv_bin: Path, cwd: Path, *args: str, endpoint: str = "http://127.0.0.1:9"
) -> subprocess.CompletedProcess[str]:
    """`apilake ...` from the venv, in an empty folder, against ``endpoint`` for every AWS call."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "AWS_PROFILE")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return run(venv_bin / "apilake", *args, env=env, cwd=cwd)


def test_the_operator_install_has_no_dev_package_and_knows_its_version(venv_bin: Path, tmp_path: Path) -> None:
    # Given the operator install
    # When its Python looks for the dev install's packages
    code = f"import importlib.util as u; print([m for m in {DEV_PACKAGES!r} if u.find_spec(m)])"
    found = run(venv_bin / "python", "-c", code, cwd=tmp_path)
    # Then there is none of them
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stdout + found.stderr
    # And `apilake --version` is the project's version
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = apilake(venv_bin, tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"apilake {expected}"), version.stderr


def test_status_reads_a_deployed_ledger(venv_bin: Path, endpoint: str, tmp_path: Path) -> None:
    # Given a lake bucket whose ledger has a complete run
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="operator-lake")
    write_run(s3, "operator-lake", landed_pages=2)
    # When the operator asks for its status
    status = apilake(
        venv_bin, tmp_path, "status", "--bucket", "operator-lake", "--region", "us-east-1", endpoint=endpoint
    )
    # Then it exits 0 and says the run is complete
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"run {RUN} (ingestion date 2026-11-26): complete: yes" in status.stdout


def test_redrive_moves_a_dlq_message_back(venv_bin: Path, endpoint: str, tmp_path: Path) -> None:
    # Given a stack (in moto's CloudFormation) with a source's queue and DLQ named as template.yaml names them,
    # its DLQ holding one message
    stage, source = "ops", "api-a"
    queues = {
        "Dlq": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": dlq_name(stage, source)}},
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": queue_name(stage, source)}},
    }
    stack = {"Resources": queues, "Outputs": {"StageName": {"Value": stage}}}
    cloudformation = boto3.client("cloudformation", endpoint_url=endpoint, region_name="us-east-1")
    cloudformation.create_stack(StackName="apilake-ops", TemplateBody=json.dumps(stack))
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    queue, dlq = (
        sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in (queue_name(stage, source), dlq_name(stage, source))
    )
    body = json.dumps({"page": 7})
    sqs.send_message(QueueUrl=dlq, MessageBody=body)
    # When the operator redrives the source
    where = ["--stack-name", "apilake-ops", "--region", "us-east-1"]
    moved = apilake(venv_bin, tmp_path, "redrive", *where, "--source", source, "--json", endpoint=endpoint)
    # Then the message is in the queue and the DLQ is empty
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert json.loads(moved.stdout)["moved"] == 1
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in received] == [body]
    assert sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []) == []


@pytest.mark.parametrize("command", [["demo"], ["query", "select 1"], ["template", "--check"]])
def test_a_dev_command_says_it_needs_the_dev_install(venv_bin: Path, tmp_path: Path, command: list[str]) -> None:
    result = apilake(venv_bin, tmp_path, *command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"apilake {command[0]} needs the dev install: pip install -e '.[dev]'" in result.stderr
