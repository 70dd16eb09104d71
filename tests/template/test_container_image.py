"""The container image (container/Dockerfile) without a Docker engine: its stages and user read from the file,
what it copies checked against the repository and .dockerignore, its pinned requirements against the dev lock and
pyproject, its environment made as the builder makes it and its entrypoint run from there against a fake vendor,
and checkov's Dockerfile checks."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from apilake_dev.template.generate import parse_template
from apilake_dev.vendors.fake import Dataset, FakeVendor
from tests.template.conftest import ROOT
from tests.template.test_tools import CHECKOV

DOCKERFILE = ROOT / "container" / "Dockerfile"
UV = ROOT / ".tools" / "bin" / "uv"  # `make env` installs it
DOCKERIGNORE = ROOT / ".dockerignore"
LAYER_REQUIREMENTS = ROOT / "layers" / "common" / "requirements.txt"
CONTAINER_REQUIREMENTS = ROOT / "container" / "requirements.txt"
# What may appear in the final stage: nothing that runs a command (no RUN), so no package manager or compiler.
FINAL_STAGE_INSTRUCTIONS = {"LABEL", "ENV", "COPY", "WORKDIR", "USER", "HEALTHCHECK", "ENTRYPOINT", "CMD"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: each FROM's image and name, and its instructions (continuations joined)."""
    stages: list[Stage] = []
    logical = re.sub(r"\\\n(\s*#.*\n)*", " ", text)  # a backslash continues the line (comment lines skipped)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            image, *rest = arguments.split()
            stages.append(Stage(image, rest[1] if rest[:1] == ["AS"] or rest[:1] == ["as"] else None))
        else:
            stages[-1].instructions.append((instruction, arguments))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ENV, ``KEY=VALUE`` pairs (continuation lines joined)."""
    return dict(pair.split("=", 1) for arguments in stage.args("ENV") for pair in shlex.split(arguments))


def entrypoint(stage: Stage) -> list[str]:
    (arguments,) = stage.args("ENTRYPOINT")
    found: list[str] = json.loads(arguments)  # the exec form: no shell between ECS and the runner
    return found


def pins(path: Path) -> dict[str, str]:
    """A requirements file's ``name==version`` lines, by canonical name; any other requirement fails."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and not re.search(r"[<>=!~;\[ ]", name + version), f"{path.name}: {line!r}"
            found[canonicalize_name(name)] = version
    return found


def test_two_stages_on_one_python_312_slim_base_pinned_by_tag(stages: list[Stage]) -> None:
    base, builder, final = stages
    # The base image named once: Python 3.12 as the Lambda runtime, slim, a version tag (never latest)
    assert re.fullmatch(r"python:3\.12(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base.base), base.base
    assert base.name == "base" and base.instructions == []
    assert (builder.base, builder.name, final.base, final.name) == ("base", "builder", "base", None)


def test_the_final_stage_runs_nothing_and_copies_the_builders_environment_and_the_sources(stages: list[Stage]) -> None:
    final = stages[-1]
    assert {instruction for instruction, _ in final.instructions} <= FINAL_STAGE_INSTRUCTIONS
    copies = final.args("COPY")
    assert copies == ["--from=builder /opt/apilake /opt/apilake", "layers/common/sources.yaml /app/sources.yaml"]
    env = env_of(final)
    assert env["APILAKE_SOURCES_FILE"] == "/app/sources.yaml"
    assert env["PATH"].startswith("/opt/apilake/bin:")
    # Nothing is written beside the code at run time (read-only root): no bytecode, HOME and the workdir in /tmp
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["HOME"] == "/tmp" and final.args("WORKDIR") == ["/tmp"]


def test_the_builder_installs_binary_wheels_of_the_pinned_requirements_into_an_environment_without_pip(
    stages: list[Stage],
) -> None:
    runs = " && ".join(stages[1].args("RUN"))
    assert "python -m venv --without-pip /opt/apilake" in runs
    install = next(r for r in stages[1].args("RUN") if "-r requirements-layer.txt" in r)
    assert "--only-binary=:all:" in install and "--no-deps" in install and "-r requirements-container.txt" in install
    # The build backend pinned, its build not isolated (nothing unpinned fetched); the dev tools left out
    assert re.search(r"pip install hatchling==\d+\.\d+\.\d+ ", runs) and "--no-build-isolation" in runs
    assert "rm -rf /opt/apilake/lib/python3.12/site-packages/apilake_dev" in runs
    assert "--invalidation-mode unchecked-hash" in runs  # as the layer: bytecode valid whatever the files' mtimes


def test_it_runs_as_an_unprivileged_user_with_its_logs_on_stderr(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 1000 and int(gid) >= 1000, user
    assert entrypoint(final) == ["apilake", "--home", "/tmp/apilake", "ingest", "--log-file", "-"]
    assert "apilake" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (include?, regex) in order; ``*`` stays within a path segment, ``**`` spans segments."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            segments = line.removeprefix("!").strip("/").split("/")
            regex = "/".join(".*" if s == "**" else re.escape(s).replace(r"\*", "[^/]*") for s in segments)
            patterns.append((line.startswith("!"), re.compile(re.sub(r"^\.\*/", "(.*/)?", regex))))
    return patterns


def sent_to_the_builder(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for include, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            sent = include
    return sent


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("layers/common/apilake/runner.py", True),
        ("layers/common/apilake/__pycache__/runner.cpython-312.pyc", False),
        ("layers/common/Makefile", False),
        (".venv/bin/python", False),
        ("tests/unit/test_cli.py", False),
        ("pyproject.toml", True),
    ],
)
def test_the_dockerignore_rule_as_read_here(path: str, sent: bool) -> None:
    assert sent_to_the_builder(path) is sent


def test_every_copied_path_exists_and_is_sent_to_the_builder(stages: list[Stage]) -> None:
    copied = [
        source
        for stage in stages
        for arguments in stage.args("COPY")
        if not arguments.startswith("--from=")
        for source in arguments.split()[:-1]
    ]
    assert len(copied) >= 8
    for source in copied:
        path = ROOT / source
        assert path.exists(), source
        files = [f for f in [path, *path.rglob("*")] if f.is_file() and "__pycache__" not in f.parts]
        assert files and all(sent_to_the_builder(str(f.relative_to(ROOT))) for f in files), source
    # What the wheel is built from: pyproject's packages and its readme
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert {*wheel, project["project"]["readme"]} <= set(copied)


def test_the_requirements_pin_the_whole_runtime_at_the_dev_locks_versions() -> None:
    layer, container = pins(LAYER_REQUIREMENTS), pins(CONTAINER_REQUIREMENTS)
    lock = pins_of_lock()
    # The container adds what Lambda provides and the layer leaves out (the Makefile's RUNTIME_PROVIDES), no more
    provided = re.search(r"foreach p,([^,]+),--no-emit-package", (ROOT / "Makefile").read_text())
    assert provided and set(container) == {canonicalize_name(p) for p in provided.group(1).split()}
    assert not set(layer) & set(container)
    for name, version in container.items():
        assert lock[name] == version, f"container/requirements.txt {name}=={version}, the dev lock has {lock[name]}"
    # Closed: every dependency of every pinned package (and of apilake itself) is pinned too
    image = layer | container
    environment = {key: str(value) for key, value in default_environment().items()} | {"extra": ""}
    missing = set()
    for name in [*image, "apilake"]:
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            applies = requirement.marker is None or requirement.marker.evaluate(environment)
            if applies and canonicalize_name(requirement.name) not in image:
                missing.add(f"{name} -> {requirement}")
    assert not missing, sorted(missing)


def pins_of_lock() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "requirements-dev.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.split()[0]
    return found


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final stage's /opt/apilake made here as the builder makes it (uv for pip, from its cache): an environment
    without pip, the pinned requirements as binary wheels without their dependencies, the project's wheel, and
    apilake_dev removed."""
    work = tmp_path_factory.mktemp("image")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PYTHON_DOWNLOADS": "never"}
    python = work / "opt-apilake" / "bin" / "python"
    requirements: list[str | Path] = ["-r", LAYER_REQUIREMENTS, "-r", CONTAINER_REQUIREMENTS]
    steps: list[list[str | Path]] = [
        ["build", "--wheel", "--out-dir", work / "dist", ROOT],
        ["venv", "--python", sys.executable, python.parent.parent],
        ["pip", "install", "--python", python, "--no-deps", "--only-binary", ":all:", *requirements],
    ]
    for step in steps:
        done = subprocess.run([UV, *step], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"uv {step[0]}: {done.stderr}"
    (wheel,) = (work / "dist").glob("apilake-*.whl")
    installed = subprocess.run(
        [UV, "pip", "install", "--python", python, "--no-deps", wheel], env=env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    shutil.rmtree(site_packages(python.parent.parent) / "apilake_dev")
    return python.parent.parent


def site_packages(environment: Path) -> Path:
    return environment / "lib" / "python3.12" / "site-packages"


def test_the_images_environment_has_every_dependency_and_no_dev_tool(image_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    checked = subprocess.run(
        [UV, "pip", "check", "--python", image_env / "bin" / "python"], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    installed = {path.name for path in site_packages(image_env).iterdir()}
    assert {"apilake", "apilake_cli", "boto3", "pydantic_core"} <= installed
    assert not installed & {"apilake_dev", "moto", "duckdb", "samcli", "pip", "setuptools"}


def emf_documents(lines: str) -> list[dict[str, Any]]:
    """The EMF documents (Powertools prints one JSON object a line, ``_aws`` first) among the log lines."""
    return [json.loads(line) for line in lines.splitlines() if line.startswith('{"_aws"')]


@dataclass
class ImageRun:
    folder: Path  # cwd: an empty folder; "home": the entrypoint's --home
    result: subprocess.CompletedProcess[str]
    changed: list[Path]  # files of the image's environment written during the run


@pytest.fixture(scope="module")
def image_run(image_env: Path, stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> ImageRun:
    """The image's entrypoint, from the image's environment with the final stage's ENV (its --home, HOME and sources
    file here), run in an empty folder against a fake vendor on 127.0.0.1 serving one source of 3 pages."""
    folder = tmp_path_factory.mktemp("image-run")
    (folder / "cwd").mkdir()
    sources = folder / "sources.yaml"
    final = stages[-1]
    env = env_of(final) | {
        "PATH": f"{image_env / 'bin'}:/usr/bin:/bin",
        "HOME": str(folder / "tmp"),
        "APILAKE_SOURCES_FILE": str(sources),
        "POWERTOOLS_METRICS_NAMESPACE": "apilake-test",
    }
    command = entrypoint(final)
    command[command.index("--home") + 1] = str(folder / "home")
    started = time.time()
    with FakeVendor([Dataset("ds-one", total=25)]) as vendor:
        source = {
            "name": "one",
            "base_url": vendor.base_url,
            "path": "/page_number/ds-one",
            "records_path": "data",
            "record_id_path": "id",
            "pagination": {"type": "page_number", "page_size": 10, "total_path": "meta.total"},
            "budget": {"requests_per_second": 50, "max_concurrency": 2},
        }
        sources.write_text(yaml.safe_dump({"version": 1, "sources": [source]}))
        result = subprocess.run(
            [*command, "--log-level", "INFO"], cwd=folder / "cwd", env=env, capture_output=True, text=True, timeout=120
        )
    changed = [f for f in image_env.rglob("*") if f.is_file() and f.stat().st_mtime >= started]
    return ImageRun(folder, result, changed)


def test_the_entrypoint_lands_a_run_from_the_images_environment_writing_only_under_its_home(
    image_run: ImageRun,
) -> None:
    # Then the run is complete and its pages are in the lake folder under the lake's keys
    assert image_run.result.returncode == 0, image_run.result.stdout + image_run.result.stderr
    pages = sorted((image_run.folder / "home" / "lake" / "raw" / "source=one").rglob("page=*.json.gz"))
    assert len(pages) == 3, image_run.result.stdout
    # And nothing was written beside the code (no bytecode) or in the working folder: a read-only root is enough
    assert image_run.changed == [] and list((image_run.folder / "cwd").iterdir()) == []


def test_the_entrypoints_logs_carry_the_metrics_its_alarms_watch(image_run: ImageRun) -> None:
    # The logs on stderr carry EMF in the namespace the task sets, with the counts the stack's alarms watch: pages
    # landed and failed in the run, once each, for the stack (the service dimension alone)
    stack = parse_template((ROOT / "container" / "fargate.yaml").read_text())
    documents = emf_documents(image_run.result.stderr)
    assert documents and all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "apilake-test" for d in documents)
    for alarm, value in (("ZeroPagesLandedAlarm", 3), ("FailedPagesAlarm", 0)):
        name = stack["Resources"][alarm]["Properties"]["MetricName"]
        emitted = [d for d in documents if name in d]
        assert len(emitted) == 1, f"{name}: emitted {len(emitted)} times, once per run expected"
        assert emitted[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
        assert emitted[0][name] in (value, [value], float(value), [float(value)])


@pytest.mark.slow
def test_checkov_finds_no_failed_dockerfile_check() -> None:
    assert CHECKOV.exists(), "checkov's isolated environment is missing: `make checkov-env` (make test does it)"
    result = subprocess.run(
        [str(CHECKOV), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['file_line_range']}" for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["skipped"] == 0 and report["summary"]["parsing_errors"] == 0
    # Among the passed: a user that is not root, a tagged base, and the health check answered (none for a batch job)
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3", "CKV_DOCKER_7", "CKV_DOCKER_8"} <= passed
