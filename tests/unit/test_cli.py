"""The CLI: --version, sources validate, template --check, status (local folder, bucket, stack), and the
split between operator commands (runtime package and boto3) and dev commands (imported when run)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apilake.config import load_sources
from apilake.ledger import Ledger, RunManifest, ShardPlan, SourcePlan
from apilake.messages import WorkItem
from apilake_cli.lakefolder import mirror
from apilake_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
RUN = "sched-20261126T010000Z"
DEV_MODULES = ("duckdb", "moto", "jinja2", "samcli", "apilake_dev")


def write_run(s3: Any, bucket: str, landed_pages: int) -> None:
    """A run in the bucket's ledger: api-a expects 2 pages, ``landed_pages`` of them landed."""
    ledger = Ledger(s3, bucket)
    ledger.write_manifest(
        RunManifest(
            run_id=RUN,
            ingestion_date=date(2026, 11, 26),
            created_at=datetime(2026, 11, 26, 1, tzinfo=UTC),
            trigger="schedule",
            sources={"api-a": SourcePlan(shards=[ShardPlan(shard="2026-11-25", mode="fanout", expected_pages=2)])},
        )
    )
    item = WorkItem(run_id=RUN, source="api-a", ingestion_date=date(2026, 11, 26), shard="2026-11-25", page=1)
    if landed_pages:
        ledger.mark_landed([(item.model_copy(update={"page": p}), {}) for p in range(1, landed_pages + 1)])


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"apilake {expected}"


def test_operator_commands_import_no_dev_module() -> None:
    # Given a fresh interpreter
    # When it loads the command line and runs an operator command's parser
    code = (
        "import sys; from apilake_cli.main import build_parser; build_parser().parse_args(['status', '--bucket', 'b']);"
        f" print([m for m in {DEV_MODULES!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Then none of the dev install's packages (nor apilake_dev) was imported
    assert out.strip() == "[]"


def test_a_dev_command_without_the_dev_install_says_which_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no DuckDB (an install without the dev extras)
    monkeypatch.setitem(sys.modules, "duckdb", None)
    # When a dev command needs it
    # Then it exits 2 and names the install
    assert main(["query", "select 1"]) == 2
    assert "apilake query needs the dev install: pip install -e '.[dev]'" in capsys.readouterr().err


def test_sources_validate_describes_each_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the project's own sources file (whatever it holds), found from the project folder
    monkeypatch.chdir(ROOT)
    sources = load_sources(ROOT / "layers" / "common" / "sources.yaml").sources
    # When it is validated without naming it
    assert main(["sources", "validate"]) == 0
    out = capsys.readouterr().out
    # Then each source is described, and the file is counted valid
    for source in sources:
        assert f"{source.name}: {source.pagination.type} pagination, {source.sharding.type} sharding" in out
    assert f"layers/common/sources.yaml: {len(sources)} sources, valid" in out


def test_sources_validate_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "sources.yaml"
    bad.write_text(
        "version: 1\nsources:\n  - name: x\n    base_url: https://x.example.com\n    pagination: {type: single}\n"
    )
    assert main(["sources", "validate", str(bad)]) == 2
    assert "sources.yaml: source 'x': records_path: Field required" in capsys.readouterr().err


def test_template_check_passes_on_the_committed_template() -> None:
    assert main(["template", "--check"]) == 0


def test_status_without_a_lake_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "status"]) == 2
    assert "run `apilake demo` or `apilake run --local` first" in capsys.readouterr().err


@mock_aws
@pytest.mark.parametrize(("landed", "code", "line"), [(2, 0, "2/2 pages"), (1, 1, "missing page 2")])
def test_status_reads_a_deployed_lake_by_bucket_or_stack_and_the_local_folder(
    landed: int, code: int, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deployed stack whose lake bucket holds a run with `landed` of its 2 pages
    template = {
        "Resources": {"Lake": {"Type": "AWS::S3::Bucket"}},
        "Outputs": {"LakeBucketName": {"Value": {"Ref": "Lake"}}},
    }
    cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
    cloudformation.create_stack(StackName="apilake-dev", TemplateBody=json.dumps(template))
    bucket = cloudformation.describe_stacks(StackName="apilake-dev")["Stacks"][0]["Outputs"][0]["OutputValue"]
    s3 = boto3.client("s3", region_name="eu-west-1")
    write_run(s3, bucket, landed)
    # And the same lake mirrored to a local folder
    mirror(s3, bucket, tmp_path / "lake")
    for where in (["--bucket", bucket], ["--stack-name", "apilake-dev"], []):
        # When status reads it
        region = ["--region", "eu-west-1"] if where else []
        # Then it exits 0 if every page landed, 1 if not, and says which page is missing
        assert main(["--home", str(tmp_path), "status", *where, *region]) == code, where
        out = capsys.readouterr().out
        assert f"run {RUN} (ingestion date 2026-11-26): complete: {'yes' if code == 0 else 'NO'}" in out, where
        assert line in out, where


@mock_aws
def test_status_names_a_stack_without_a_lake_and_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    boto3.client("cloudformation").create_stack(StackName="other", TemplateBody=json.dumps(template))
    assert main(["status", "--stack-name", "other"]) == 2
    assert "stack other has no output LakeBucketName" in capsys.readouterr().err
    assert main(["status", "--bucket", "b", "--profile", "no-such-profile"]) == 2
    assert "apilake: AWS: The config profile (no-such-profile) could not be found" in capsys.readouterr().err
