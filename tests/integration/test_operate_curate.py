"""`apilake curate` against the deployed stack of test_operate.py (moto's server): a source's ingestion dates
found under raw/ in the range, each curated again through apilake.curation (an UNLOAD into the request's staging
prefix, swapped into the curated prefix once it succeeded), the views created, bad input refused. moto's Athena
answers SUCCEEDED without running the UNLOAD: the test puts the file it would have staged."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

import apilake_cli.curate
from apilake.curated import curated_prefix
from apilake.curation import request_marker_key
from apilake.lake import page_key
from apilake.staging import staging_prefix
from apilake_cli.main import main
from tests.integration.test_operate import (  # noqa: F401 - deployed_stack: the fixture "deployed"
    REGION,
    WHERE,
    WORKGROUP,
    Deployed,
    deployed_stack,
    out_json,
)

REQUEST = "curate-20261201T000000Z"
DAYS = [date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]


def typed_sources(deployed: Deployed, folder: Path) -> Path:
    """The deployed sources file with columns declared for api-a (api-b keeps none)."""
    document: dict[str, Any] = yaml.safe_load(deployed.sources_path.read_text())
    document["sources"][0] |= {"columns": {"id": "bigint", "name": "string"}, "record_id_path": "id"}
    path = folder / "typed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(name="landed")
def landed_dates(deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """api-a's raw pages of three dates, each date's old curated file, and the file each UNLOAD of the request
    would stage (the request's id fixed)."""
    monkeypatch.setattr(apilake_cli.curate, "request_id", lambda now: REQUEST)
    for day in DAYS:
        deployed.s3.put_object(Bucket=deployed.bucket, Key=page_key("api-a", day, "all", 1), Body=b"")
        deployed.s3.put_object(Bucket=deployed.bucket, Key=curated_prefix("api-a", day) + "old.parquet", Body=b"")
        staged = staging_prefix("api-a", day, REQUEST, 1) + "new.parquet"
        deployed.s3.put_object(Bucket=deployed.bucket, Key=staged, Body=b"PAR1")
    return typed_sources(deployed, tmp_path)


def curated_files(deployed: Deployed, day: date) -> list[str]:
    listed = deployed.s3.list_objects_v2(Bucket=deployed.bucket, Prefix=curated_prefix("api-a", day))
    return [obj["Key"].rsplit("/", 1)[-1] for obj in listed.get("Contents", [])]


def test_curate_curates_each_date_of_the_range_again_and_the_views(
    deployed: Deployed, landed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When api-a is curated again from 2026-11-25
    code = main(
        [
            "curate",
            *WHERE,
            "--source",
            "api-a",
            "--from",
            "2026-11-25",
            "--sources",
            str(landed),
            "--json",
            "--interval",
            "0",
        ]
    )
    # Then both dates of the range are done, each UNLOAD written into the request's staging prefix, then the views
    document = out_json(capsys)
    assert code == 0 and document["request_id"] == REQUEST
    assert [(run["ingestion_date"], run["state"]) for run in document["runs"]] == [
        ("2026-11-25", "done"),
        ("2026-11-26", "done"),
    ]
    athena = boto3.client("athena", region_name=REGION)
    ids = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    queries = [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"]["Query"] for i in ids]
    unloads = sorted(query.split("\nTO '")[1].split("'")[0] for query in queries if query.startswith("UNLOAD"))
    assert unloads == [f"s3://{deployed.bucket}/{staging_prefix('api-a', day, REQUEST, 1)}" for day in DAYS[1:]]
    assert sum(query.startswith("CREATE OR REPLACE VIEW") for query in queries) == 2
    # And each date's curated prefix holds the staged file instead of the old one; the date before is untouched
    assert [curated_files(deployed, day) for day in DAYS] == [["old.parquet"], ["new.parquet"], ["new.parquet"]]
    marker = deployed.s3.get_object(Bucket=deployed.bucket, Key=request_marker_key("api-a", REQUEST, DAYS[1]))
    assert b'"state":"done"' in marker["Body"].read()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--source", "api-b"], "source 'api-b' declares no columns"),
        (["--source", "api-a", "--from", "2026-12-01"], "no ingestion date of 'api-a' under s3://"),
        (["--source", "api-a", "--from", "2026-11-26", "--to", "2026-11-25"], "--from 2026-11-26 is after --to"),
    ],
)
def test_curate_refuses_what_it_cannot_curate(
    deployed: Deployed, landed: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    # When the command is given a source without columns, a range without dates, or a range backwards
    code = main(["curate", *WHERE, *arguments, "--sources", str(landed)])
    # Then it exits 2 saying why, and starts nothing
    assert code == 2 and message in capsys.readouterr().err
    assert (
        boto3.client("athena", region_name=REGION).list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"] == []
    )
