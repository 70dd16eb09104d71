"""`make template` with a parent-child pair: the child gets its own queue, DLQ and worker as every source, the
parent's worker may send to the child's queue (and no other), and finds it by the URL in its environment; the
local deployment resolves that URL to the queue it created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apilake.settings import WorkerSettings
from apilake_dev import paths
from apilake_dev.local.aws import LocalAws, deploy, load_template
from apilake_dev.template.generate import main, parse_template
from apilake_dev.vendors.github_like import sources
from tests.template.test_generate import write_sources


@pytest.fixture
def github_sources(tmp_path: Path) -> Path:
    # repos -> issues, and an unrelated third source whose queue the parent must not reach
    third = {**sources("https://api.example.com")[0], "name": "stars", "path": "/user/starred"}
    return write_sources(tmp_path / "sources.yaml", [*sources("https://api.github.com"), third])


@pytest.fixture
def resources(tmp_path: Path, github_sources: Path) -> dict[str, Any]:
    template = tmp_path / "template.yaml"
    template.write_text(paths.TEMPLATE.read_text())
    assert main(["--sources", str(github_sources), "--template", str(template)]) == 0
    found: dict[str, Any] = parse_template(template.read_text())["Resources"]
    return found


def statements(resources: dict[str, Any], role: str) -> dict[str, Any]:
    policy = resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    return {statement["Sid"]: statement for statement in policy if isinstance(statement, dict) and "Sid" in statement}


def test_the_child_has_its_own_queue_dlq_and_worker(resources: dict[str, Any]) -> None:
    assert {"IssuesQueue", "IssuesDeadLetterQueue", "IssuesWorker", "IssuesWorkerRole"} <= set(resources)
    variables = resources["IssuesWorker"]["Properties"]["Environment"]["Variables"]
    assert variables["APILAKE_QUEUE_URL"] == {"Ref": "IssuesQueue"} and "APILAKE_CHILD_QUEUE_URLS" not in variables


def test_the_parent_s_worker_sends_to_its_child_s_queue_only(resources: dict[str, Any]) -> None:
    parent = statements(resources, "ReposWorkerRole")
    assert parent["SendChildWork"]["Action"] == "sqs:SendMessage"
    assert parent["SendChildWork"]["Resource"] == [{"Fn::GetAtt": ["IssuesQueue", "Arn"]}]
    assert "SendChildWork" not in statements(resources, "IssuesWorkerRole")
    assert "SendChildWork" not in statements(resources, "StarsWorkerRole")
    variables = resources["ReposWorker"]["Properties"]["Environment"]["Variables"]
    assert variables["APILAKE_CHILD_QUEUE_URLS"] == {"Fn::Sub": '{"issues": "${IssuesQueue}"}'}


def test_the_local_deployment_gives_the_parent_the_child_s_queue_url(
    github_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalAws() as aws:
        deployment = deploy(load_template(github_sources), aws, github_sources)
        workers = {worker.source: worker for worker in deployment.workers}
        environment = workers["repos"].environment
        assert json.loads(environment["APILAKE_CHILD_QUEUE_URLS"]) == {"issues": deployment.queues["issues"]}
        # And the worker's settings read it as the map the fan-out looks the child's queue up in
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        settings = WorkerSettings.from_env()
        assert settings.child_queue_urls == {"issues": deployment.queues["issues"]}
        assert "APILAKE_CHILD_QUEUE_URLS" not in workers["issues"].environment
