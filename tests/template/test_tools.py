"""The template through the real tools: sam validate --lint, cfn-lint on the translated template,
checkov, and sam build (arm64 for Lambda, plus a host-architecture layer to import from)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from apilake.config import SourcesFile
from apilake.names import logical_id
from apilake_dev.local.hostlayer import build_host_layer, runtime_packages
from apilake_dev.template.generate import parse_template
from tests.template.conftest import ROOT

BIN = Path(sys.executable).parent
CHECKOV = BIN.parent.parent / ".checkov" / "bin" / "checkov"  # beside the dev venv (make checkov-env)
CFN_LINT = BIN.parent.parent / ".cfn-lint" / "bin" / "cfn-lint"  # its latest release (make cfn-lint-env)
# The optional parts switched on: the VPC (with a network to satisfy its Rules) and the data-events trail; and
# reserved concurrency off.
OPTIONS_ON = {
    "ReservedConcurrency": "'false'",
    "EnableVpcEndpoints": "'true'",
    "EnableDataEventsTrail": "'true'",
    "VpcId": "vpc-0123456789abcdef0",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "RouteTableIds": "rtb-0123456789abcdef0",
}


def with_options_on(target: Path) -> Path:
    """template.yaml with the optional parts' parameters defaulting to on (what checkov and cfn-lint see)."""
    text = (ROOT / "template.yaml").read_text()
    for name, value in OPTIONS_ON.items():
        start = text.index("Default:", text.index(f"\n  {name}:\n"))
        text = text[:start] + f"Default: {value}" + text[text.index("\n", start) :]
    target.write_text(text)
    return target


@pytest.fixture(params=["options off", "options on"])
def variant(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """template.yaml as it is (VPC and trail off), and with both on."""
    if request.param == "options off":
        return ROOT / "template.yaml"
    return with_options_on(tmp_path / "template.yaml")


pytestmark = pytest.mark.slow


def run(
    *command: str | Path, cwd: Path = ROOT, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    env.update(extra_env or {})
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # python3.12 with pip, for sam build
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_sam_validate_lint_is_clean() -> None:
    result = run(BIN / "sam", "validate", "--lint", "--template", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def translated_template(path: Path | None = None) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template = parse_template((path or ROOT / "template.yaml").read_text())
    for resource in template["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://apilake-artifacts/placeholder.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    translated: dict[str, Any] = transform(template, {}, NoManagedPolicies())
    return translated


def test_the_latest_cfn_lint_is_clean_on_the_raw_and_translated_template(tmp_path: Path, variant: Path) -> None:
    # cfn-lint does not range-check AWS::Serverless::* properties: lint what they become, too.
    assert CFN_LINT.exists(), "cfn-lint's environment is missing: `make cfn-lint-env` (make test does it)"
    translated = translated_template(variant)
    assert "AWS::Lambda::EventSourceMapping" in {r["Type"] for r in translated["Resources"].values()}
    path = tmp_path / "translated.json"
    path.write_text(json.dumps(translated))
    for linted in (variant, path):
        result = run(CFN_LINT, linted)  # exit 0: no error, no warning, no informational finding
        assert result.returncode == 0, f"{linted.name}: {result.stdout}{result.stderr}"


def test_translated_event_source_mappings_keep_their_limits(sources: SourcesFile) -> None:
    mappings = [
        r["Properties"]
        for r in translated_template()["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert len(mappings) == len(sources.sources)
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_checkov_finds_no_failed_check(variant: Path) -> None:
    assert CHECKOV.exists(), "checkov's isolated environment is missing: `make checkov-env` (make test does it)"
    result = run(CHECKOV, "-f", variant, "--framework", "cloudformation", "--skip-download", "--output", "json")
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    # And it read the whole template: every resource, no parsing error
    resources = parse_template(variant.read_text())["Resources"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] == len(resources)
    assert summary["passed"] >= len(resources)


@pytest.fixture(scope="module")
def arm64_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("sam-build-arm64")
    result = run(BIN / "sam", "build", "--template", "template.yaml", "--build-dir", build_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return build_dir


def test_sam_build_makes_an_arm64_layer_with_the_package_and_the_sources(
    arm64_build: Path, sources: SourcesFile
) -> None:
    layer = arm64_build / "CommonLayer" / "python"
    assert (layer / "apilake" / "ingest.py").exists()
    assert (layer / "sources.yaml").exists()
    # And the sources file's validated copy, made from it by this build (what the Lambdas read at a cold start)
    assert (layer / "sources.yaml.validated.pickle").read_bytes().startswith(b"apilake sources ")
    assert list((layer / "pydantic_core").glob("*aarch64-linux-gnu.so")), "pydantic_core must be built for arm64"
    # And it ships bytecode that Python uses without looking at the sources' mtimes (unchecked hash)
    for module in ("apilake/ingest.py", "pydantic/main.py", "aws_lambda_powertools/logging/logger.py"):
        cached = layer / Path(importlib.util.cache_from_source(module))
        assert int.from_bytes(cached.read_bytes()[4:8], "little") == 0b01, f"{cached}: not an unchecked-hash .pyc"
    assert not (layer / "bin").exists() and not (layer / "Makefile").exists()
    for function in ("Planner", "Completeness", *(logical_id(s.name, "Worker") for s in sources.sources)):
        assert (arm64_build / function / "app.py").exists()


def test_the_built_layer_imports_with_only_its_own_requirements(tmp_path: Path, sources: SourcesFile) -> None:
    # Given the same layer built for this machine's architecture (the arm64 one cannot load here)
    layer = build_host_layer(tmp_path / "host")
    # And a runtime holding only what Lambda's python3.12 provides (boto3 and its dependencies)
    runtime = runtime_packages(tmp_path / "runtime")
    # When each handler is imported in an isolated interpreter (no site-packages) with the layer's paths
    for function in ("planner", "worker", "completeness"):
        code = (
            "import sys; sys.path[:0] = sys.argv[1:]\n"
            "import app, apilake.config\n"
            "assert callable(app.handler)\n"
            "sources = apilake.config.load_sources(sys.argv[2] + '/sources.yaml', validated_copy=True)\n"
            "print(app.__name__, [s.name for s in sources.sources], 'yaml' in sys.modules)\n"
        )
        imported = run(sys.executable, "-I", "-S", "-c", code, ROOT / "functions" / function, layer, runtime)
        # Then it imports, and reads the sources file from where the layer puts it (/opt/python): its validated
        # copy, without PyYAML
        assert imported.returncode == 0, imported.stderr
        assert f"{[s.name for s in sources.sources]} False" in imported.stdout
