"""The CLI: --version, sources validate, template --check, status (local folder, bucket), report (local
folder), query --athena's waiting and errors (botocore's Stubber), each command's exit codes in its help,
and the split between operator commands (runtime package and boto3) and dev commands (imported when run).
The commands against a deployed stack: tests/integration/test_operate*.py."""

from __future__ import annotations

import json
import os
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
from apilake.folder_store import FolderClient
from apilake.ledger import Ledger, RunManifest, ShardPlan, SourcePlan, manifest_key
from apilake.messages import WorkItem
from apilake.report import RunReport, build_report, report_keys
from apilake_cli import develop
from apilake_cli.lakefolder import mirror
from apilake_cli.main import build_parser, main
from apilake_cli.operate import choose_run

ROOT = Path(__file__).resolve().parents[2]
RUN = "sched-20261126T010000Z"
# jinja2 is a runtime dependency (the run report is rendered in the layer), not one of these.
DEV_MODULES = ("duckdb", "moto", "samcli", "apilake_dev")


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


def test_local_up_is_a_command_of_apilake() -> None:
    # Given the command line, When `local up` is parsed, Then it reaches the dev command with its options
    args = build_parser().parse_args(["local", "up", "--port", "0", "--endpoint-host", "172.17.0.1"])
    assert args.func is develop.cmd_local_up
    assert (args.port, args.endpoint_host) == (0, "172.17.0.1")


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
    assert "sources.yaml:3:5: source 'x': records_path: Field required" in capsys.readouterr().err


def test_template_check_passes_on_the_committed_template() -> None:
    assert main(["template", "--check"]) == 0


def test_status_without_a_lake_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "status"]) == 2
    assert "run `apilake demo` or `apilake run --local` first" in capsys.readouterr().err


@mock_aws
@pytest.mark.parametrize(("landed", "code", "line"), [(2, 0, "2/2 pages"), (1, 1, "missing page 2")])
def test_status_reads_a_deployed_lake_by_bucket_and_the_local_folder(
    landed: int, code: int, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deployed lake bucket (in another region than the default) holding a run with `landed` of its 2 pages
    bucket = "apilake-dev-lake"
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    write_run(s3, bucket, landed)
    # And the same lake mirrored to a local folder
    mirror(s3, bucket, tmp_path / "lake")
    for where in (["--bucket", bucket], []):
        # When status reads it
        region = ["--region", "eu-west-1"] if where else []
        # Then it exits 0 if every page landed, 1 if not, and says which page is missing
        assert main(["--home", str(tmp_path), "status", *where, *region]) == code, where
        out = capsys.readouterr().out
        assert f"run {RUN} (ingestion date 2026-11-26): complete: {'yes' if code == 0 else 'NO'}" in out, where
        assert line in out, where


@mock_aws
def test_status_judges_schema_drift_against_the_sources_files_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a source pinned to {id: bigint, amount: double}, whose vendor now sends id as a string and adds tags
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "version: 1\nsources:\n  - name: api-a\n    base_url: https://api-a.example.com\n    path: /orders\n"
        "    records_path: data\n    pagination: {type: single}\n    columns: {id: bigint, amount: double}\n"
    )
    bucket = "apilake-dev-lake"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    write_run(s3, bucket, 0)
    item = WorkItem(run_id=RUN, source="api-a", ingestion_date=date(2026, 11, 26), shard="2026-11-25", page=1)
    fields = {"id": ["string"], "amount": ["number"], "tags": ["array"]}
    Ledger(s3, bucket).mark_landed([(item, {"records": 3, "fields": fields})])
    # When status reads the run with that sources file, as text and as JSON
    main(["status", "--bucket", bucket, "--sources", str(sources)])
    text = capsys.readouterr().out
    main(["status", "--bucket", bucket, "--sources", str(sources), "--json"])
    drift = json.loads(capsys.readouterr().out)["sources"][0]["schema_drift"]
    # Then both name the new field and the changed type
    assert "new field 'tags' (array): not in columns" in text
    assert "field 'id' changed type: declared bigint, seen string" in text
    assert list(drift["new"]) == ["tags"] and [change["field"] for change in drift["changed"]] == ["id"]


@mock_aws
def test_status_counts_a_stalled_chains_awaited_page_as_the_report_and_the_metric_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a chain whose pages 1 and 2 landed, and nothing after (no end, no failure recorded)
    bucket = "apilake-dev-lake"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    ledger = Ledger(s3, bucket)
    chain = SourcePlan(shards=[ShardPlan(shard="all", mode="chain")])
    created = datetime(2026, 11, 26, 1, tzinfo=UTC)
    manifest = RunManifest(
        run_id=RUN, ingestion_date=date(2026, 11, 26), created_at=created, trigger="schedule", sources={"api-b": chain}
    )
    ledger.write_manifest(manifest)
    item = WorkItem(run_id=RUN, source="api-b", ingestion_date=date(2026, 11, 26), shard="all", page=1)
    ledger.mark_landed([(item, {}), (item.model_copy(update={"page": 2}), {})])
    # When status reads it, as text and as JSON
    assert main(["status", "--bucket", bucket]) == 1
    text = capsys.readouterr().out
    assert main(["status", "--bucket", bucket, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    # Then page 3, the one the chain waits for, is missing, with the chain's note as the reason
    note = "chain not ended: no page after 2 has landed yet"
    assert f"missing page 3: {note}" in text
    (shard,) = document["sources"][0]["shards"]
    assert shard["missing"] == [{"page": 3, "reason": note}]
    # And the report counts the same page
    (source,) = build_report(ledger, manifest, None, created).sources
    assert [(m.page, m.reason) for m in source.missing] == [(3, note)]


@mock_aws
def test_status_names_a_stack_without_a_lake_and_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    boto3.client("cloudformation").create_stack(StackName="other", TemplateBody=json.dumps(template))
    assert main(["status", "--stack-name", "other"]) == 2
    assert "stack other has no output LakeBucketName: is it an apilake stack" in capsys.readouterr().err
    assert main(["status", "--bucket", "b", "--profile", "no-such-profile"]) == 2
    assert "apilake: AWS: The config profile (no-such-profile) could not be found" in capsys.readouterr().err


class CountingFolder(FolderClient):
    """The lake folder, noting each key read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: list[str] = []

    def get_object(self, *, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        self.read.append(Key)
        return super().get_object(Bucket=Bucket, Key=Key, **options)


@pytest.mark.parametrize(
    ("written", "latest", "read"),
    [
        ({"run-a": 0, "run-c": 120, "run-b": 60}, "run-c", ["run-c"]),
        ({"run-a": 0, "run-c": 60, "run-b": 60}, "run-b", ["run-c", "run-b"]),
    ],
    ids=["the manifest written last", "written in the same second: the one created last"],
)
def test_the_latest_run_is_found_by_listing_the_manifests_and_reading_only_the_newest(
    written: dict[str, int], latest: str, read: list[str], tmp_path: Path
) -> None:
    # Given a lake folder with three runs' manifests, written at these seconds, each created as listed (a, c, b)
    lake = tmp_path / "lake"
    ledger = Ledger(FolderClient(lake), "local")
    for minute, run_id in enumerate(written):
        created = datetime(2026, 11, 26, 1, minute, tzinfo=UTC)
        manifest = RunManifest(
            run_id=run_id, ingestion_date=date(2026, 11, 26), created_at=created, trigger="manual", sources={}
        )
        path = lake / manifest_key(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(manifest.model_dump_json())
        os.utime(path, (1796000000 + written[run_id],) * 2)
    store = CountingFolder(lake)
    # When the latest run is asked for
    found = choose_run(Ledger(store, "local"), None)
    # Then it is the newest manifest, and only the newest are read
    assert found.run_id == latest and store.read == [manifest_key(run) for run in read]
    assert ledger.read_manifest(latest) == found


@mock_aws
def test_the_mirrored_lake_keeps_each_objects_time(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    write_run(s3, "lake", 1)
    mirror(s3, "lake", tmp_path)
    for obj in s3.list_objects_v2(Bucket="lake")["Contents"]:
        assert (tmp_path / obj["Key"]).stat().st_mtime == obj["LastModified"].timestamp()


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_report_of_the_local_lake_prints_where_it_is_and_opens_it(
    as_json: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a local lake folder whose latest run has its report
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        write_run(s3, "lake", 2)
        mirror(s3, "lake", tmp_path / "lake")
    json_key, html_key = report_keys(RUN)
    for key in (json_key, html_key):
        (tmp_path / "lake" / key).write_text("{}")
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    # When the report is asked for and opened
    assert main(["--home", str(tmp_path), "report", "--open", *(["--json"] if as_json else [])]) == 0
    # Then its paths in the lake folder are printed and the HTML opened in the browser
    html, data = tmp_path / "lake" / html_key, tmp_path / "lake" / json_key
    printed = capsys.readouterr().out
    if as_json:
        assert json.loads(printed) == {"run_id": RUN, "from": "local", "json": str(data), "html": str(html)}
    else:
        assert f"run {RUN}: report {html}\n  data {data}" in printed
    assert opened == [html.resolve().as_uri()]
    # And without the HTML (not written yet), the report is built now from the lake folder's ledger, into
    # <home>/reports/<run>/ (the lake folder stays a mirror of the bucket)
    html.unlink()
    assert main(["--home", str(tmp_path), "report", "--run", RUN]) == 0
    built = tmp_path / "reports" / RUN
    assert f"run {RUN}: report built now from the ledger (no report stored yet): {built / 'report.html'}" in (
        capsys.readouterr().out
    )
    report = RunReport.model_validate_json((built / "report.json").read_text())
    assert (report.run_id, report.complete, report.pages_landed) == (RUN, True, 2)
    assert not html.exists()


# -- errors as JSON, and each command's exit codes ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "document"),
    [
        (["status", "--json"], "no ledger in"),
        (["report", "--json"], "no ledger in"),
        (["status", "--bucket", "b", "--profile", "no-such-profile", "--json"], "AWS: The config profile"),
    ],
)
def test_an_error_with_json_is_a_json_document_too(
    args: list[str], document: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), *args]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error.startswith(document) and f"apilake: {error}" in captured.err


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        (
            ["run"],
            [
                "0  planned (with --follow: complete; --local: complete)",
                "1  --follow: settled incomplete",
                "3  --follow",
            ],
        ),
        (["backfill"], ["0  planned", "3  --follow: not complete in time"]),
        (["status"], ["0  the run is complete", "1  it is not"]),
        (["dlq", "peek"], ["0  the DLQ is empty", "1  messages are in it"]),
        (["redrive"], ["1  the move task FAILED or was CANCELLED", "3  the move task still running at --timeout"]),
        (["query"], ["0  the query succeeded", "3  --athena: still running at --timeout (cancelled)"]),
        (["report"], ["0  the report is there (stored, or built now)"]),
    ],
)
def test_each_operator_commands_help_ends_with_its_exit_codes(
    command: list[str], codes: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    printed = capsys.readouterr().out
    assert "exit codes:" in printed and "2  bad input, or an AWS error" in printed
    for code in codes:
        assert code in printed
