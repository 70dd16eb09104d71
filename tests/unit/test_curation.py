"""The curated step on AWS, driven by the completeness check: which runs it curates, the statements it starts in
Athena, the markers' states (started once, done, failed and retried once), the UNLOAD into a staging prefix swapped
into the curated one once it succeeded, the view DDL after the first curation and again when the columns change,
the bound per check. moto's Athena records the executions and answers SUCCEEDED without running them (the
stand-in writes one file where an UNLOAD would); a failure is Athena's answer rewritten."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import sqlglot
from sqlglot import exp

from apilake import curated
from apilake.completeness import CompletenessCheck, CompletenessSummary
from apilake.config import SourcesFile
from apilake.curation import MAX_STARTS, Curation, State, marker_key, view_statements, views_key
from apilake.staging import staging_prefix
from tests.unit.test_completeness import (  # noqa: F401 - moto_lake: the fixture "lake"
    BUCKET,
    STAGE,
    Lake,
    emitted,
    fanout,
    moto_lake,
    sources_file,
)

ATHENA = "athena" if "athena" in sqlglot.Dialect.classes else "trino"
WORKGROUP = "apilake-test"
DATABASE = "apilake_test"
COLUMNS = {"id": "bigint", "name": "string"}
TYPED = {"columns": COLUMNS, "record_id_path": "id"}


def typed_sources(columns: dict[str, str] = COLUMNS) -> SourcesFile:
    """api-x with columns (curated), api-raw without (raw only)."""
    return sources_file("api-x", "api-raw", **{"api-x": {"columns": columns, "record_id_path": "id"}})


@dataclass
class Athena:
    """moto's Athena client, with the executions started and the ones to answer FAILED (Athena's reason)."""

    client: Any
    s3: Any = None  # where an UNLOAD's file is written (None: nowhere)
    failing: dict[str, str] = field(default_factory=dict)  # statement prefix -> reason
    started: list[dict[str, Any]] = field(default_factory=list)

    def start_query_execution(self, **kwargs: Any) -> Any:
        self.started.append(kwargs)
        response = self.client.start_query_execution(**kwargs)
        written = re.search(r"\nTO 's3://([^/]+)/([^']+)'", kwargs["QueryString"])
        if self.s3 is not None and written:
            key = f"{written.group(2)}{response['QueryExecutionId']}_00000.zstd.parquet"
            self.s3.put_object(Bucket=written.group(1), Key=key, Body=b"PAR1")
        return response

    def get_query_execution(self, QueryExecutionId: str) -> Any:  # noqa: N803 - boto3's name
        response = self.client.get_query_execution(QueryExecutionId=QueryExecutionId)
        execution = response["QueryExecution"]
        for prefix, reason in self.failing.items():
            if execution["Query"].startswith(prefix):
                execution["Status"] = {"State": "FAILED", "StateChangeReason": reason}
        return response

    def statements(self) -> list[str]:
        return [str(call["QueryString"]) for call in self.started]


@dataclass
class Step:
    lake: Lake
    athena: Athena
    clock: datetime
    calls: list[str]

    def curation(self, max_starts: int = MAX_STARTS) -> Curation:
        return Curation(self.lake.s3, BUCKET, self.athena, WORKGROUP, DATABASE, max_starts)

    def check(self, sources: SourcesFile, minutes: int = 5, max_starts: int = MAX_STARTS) -> CompletenessSummary:
        check = CompletenessCheck(
            self.lake.ledger, sources, self.lake.sqs, STAGE, timedelta(minutes=360), self.curation(max_starts)
        )
        return check.check(self.clock + timedelta(minutes=minutes))

    def run(self, run_id: str, hours_ago: float, sources: dict[str, int], landed: dict[str, int] | None = None) -> None:
        """A manual run planned ``hours_ago``, ``sources``' pages planned, ``landed`` of them landed (all: None)."""
        self.lake.run(
            run_id, self.clock - timedelta(hours=hours_ago), {s: fanout(n) for s, n in sources.items()}, "manual"
        )
        for source, pages in (landed or sources).items():
            self.lake.land(run_id, source, list(range(1, pages + 1)))

    def marker(self, source: str, run_id: str) -> dict[str, Any]:
        body = self.lake.s3.get_object(Bucket=BUCKET, Key=marker_key(source, run_id))["Body"].read()
        marker: dict[str, Any] = json.loads(body)
        return marker

    def views(self, source: str) -> dict[str, Any]:
        views: dict[str, Any] = json.loads(self.lake.s3.get_object(Bucket=BUCKET, Key=views_key(source))["Body"].read())
        return views


@pytest.fixture(name="step")
def curation_step(lake: Lake) -> Iterator[Step]:
    """The lake (moto), Athena's workgroup in moto, and the S3 and Athena calls in their order."""
    client = boto3.client("athena", region_name="us-east-1")
    client.create_work_group(
        Name=WORKGROUP, Configuration={"ResultConfiguration": {"OutputLocation": "s3://results/results/"}}
    )
    calls: list[str] = []

    def record(event_name: str, **_: Any) -> None:
        calls.append(event_name.rsplit(".", 1)[-1])

    lake.s3.meta.events.register("before-call.s3.*", record)
    client.meta.events.register("before-call.athena.*", record)
    # The recent runs are found by their manifests' LastModified (moto's clock): the checks run at the clock's time.
    yield Step(lake, Athena(client, lake.s3), datetime.now(UTC).replace(microsecond=0), calls)


def test_a_run_complete_for_a_source_with_columns_starts_its_dates_unload_once(step: Step) -> None:
    # Given a run complete for api-x and api-raw (no columns), a run landed partly, and an old curated object
    step.run("manual-a", 2, {"api-x": 1, "api-raw": 1})
    step.run("manual-b", 1, {"api-x": 2}, landed={"api-x": 1})
    day = (step.clock - timedelta(hours=2)).date()
    stale = curated.curated_prefix("api-x", day) + "old.parquet"
    step.lake.s3.put_object(Bucket=BUCKET, Key=stale, Body=b"old")
    # When the check runs
    step.calls.clear()
    summary = step.check(typed_sources())
    # Then one UNLOAD is started, the one apilake.curated writes for the run's date but into the attempt's staging
    # prefix, in the workgroup and database
    (unload,) = step.athena.started
    staged = staging_prefix("api-x", day, "manual-a", 1)
    assert unload["QueryString"] == curated.unload_statement(typed_sources().get("api-x"), day, BUCKET, staged)
    assert f"TO 's3://{BUCKET}/{staged}'" in unload["QueryString"]
    assert staged == f"curated-staging/source=api-x/ingestion_date={day}/run=manual-a/attempt=1/"
    assert (unload["WorkGroup"], unload["QueryExecutionContext"]) == (WORKGROUP, {"Database": DATABASE})
    assert isinstance(sqlglot.parse_one(unload["QueryString"], read=ATHENA), exp.Command)
    select = unload["QueryString"].removeprefix("UNLOAD (").split(")\nTO '")[0]
    assert isinstance(sqlglot.parse_one(select, read=ATHENA), exp.Select)
    # And the date's curated prefix still holds its old object while the query runs (nothing deleted)
    assert "DeleteObjects" not in step.calls and curated_keys(step, day) == [stale]
    # And the marker says running, with the query; the incomplete run and the raw-only source have none
    marker = step.marker("api-x", "manual-a")
    assert (marker["state"], marker["attempt"], marker["ingestion_date"]) == ("running", 1, day.isoformat())
    assert summary.curation is not None and summary.curation.started == 1
    assert [(run.run_id, run.state, run.query_execution_id) for run in summary.curation.runs] == [
        ("manual-a", State.RUNNING, marker["query_execution_id"])
    ]
    for source, run_id in [("api-x", "manual-b"), ("api-raw", "manual-a")]:
        with pytest.raises(step.lake.s3.exceptions.NoSuchKey):
            step.marker(source, run_id)
    # And a second check starts nothing again: it finds the query done (with its bytes), swaps the staged file in
    # for the old one (copied before the old is deleted), and creates the views
    step.calls.clear()
    again = step.check(typed_sources(), minutes=20)
    assert curated_keys(step, day) == [
        curated.curated_prefix("api-x", day) + f"{marker['query_execution_id']}_00000.zstd.parquet"
    ]
    assert step.calls.index("CopyObject") < step.calls.index("DeleteObjects")
    assert step.lake.s3.list_objects_v2(Bucket=BUCKET, Prefix=staged)["KeyCount"] == 0
    assert step.athena.statements()[1:] == view_statements(typed_sources().get("api-x"))
    assert (step.marker("api-x", "manual-a")["state"], step.marker("api-x", "manual-a")["bytes_scanned"]) == ("done", 0)
    assert again.curation is not None and again.curation.started == 2


def test_two_checks_at_once_start_a_curation_once(step: Step) -> None:
    # Given a complete run, and a check that read no marker just before another one created it
    step.run("manual-a", 2, {"api-x": 1})
    step.check(typed_sources())
    late = step.curation()
    real_read = late._read

    def stale_read(key: str, model: Any) -> Any:
        doc = real_read(key, model)
        if key == marker_key("api-x", "manual-a"):
            doc.model, doc.etag = None, None  # what it read before the first check wrote the marker
        return doc

    late._read = stale_read  # type: ignore[method-assign]
    # When that check goes on
    check = CompletenessCheck(step.lake.ledger, typed_sources(), step.lake.sqs, STAGE, timedelta(minutes=360), late)
    summary = check.check(step.clock + timedelta(minutes=5))
    # Then its conditional write loses: one UNLOAD in all, the marker the first check's
    assert len(step.athena.statements()) == 1 and summary.curation is not None and summary.curation.started == 0
    assert step.marker("api-x", "manual-a")["attempt"] == 1


def test_a_failed_curation_is_started_once_again_then_left_failed(
    step: Step, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a complete run whose UNLOAD Athena fails (the workgroup's scan cutoff)
    reason = "Query exhausted resources: bytes scanned limit was exceeded"
    step.athena.failing["UNLOAD"] = reason
    step.run("manual-a", 2, {"api-x": 1})
    step.check(typed_sources())
    capsys.readouterr()
    # When the next check looks at it
    failed = step.check(typed_sources(), minutes=20)
    # Then the marker says failed with Athena's reason, the metric counts it, and nothing is started in that check
    marker = step.marker("api-x", "manual-a")
    assert (marker["state"], marker["attempt"]) == ("failed", 1) and reason in marker["reason"]
    metrics = emitted(capsys.readouterr().out)
    # (per source, and for the stack: what CurationFailedAlarm watches)
    assert metrics[("curation_failed", "api-x")] == metrics[("curation_failed", None)] == 1
    assert len(step.athena.statements()) == 1 and failed.curation is not None
    assert [(run.state, run.reason) for run in failed.curation.runs] == [(State.FAILED, marker["reason"])]
    # And the check after starts it again (attempt 2), which fails too and is then left failed
    step.check(typed_sources(), minutes=35)
    assert (step.marker("api-x", "manual-a")["state"], step.marker("api-x", "manual-a")["attempt"]) == ("running", 2)
    step.check(typed_sources(), minutes=50)
    capsys.readouterr()
    step.check(typed_sources(), minutes=65)
    assert (step.marker("api-x", "manual-a")["state"], step.marker("api-x", "manual-a")["attempt"]) == ("failed", 2)
    assert (
        len(step.athena.statements()) == 2
        and step.athena.statements()[0].replace("attempt=1", "attempt=2") == step.athena.statements()[1]
    )
    # And the live prefix was never touched, each attempt's staged file removed
    day = (step.clock - timedelta(hours=2)).date()
    assert (
        curated_keys(step, day) == []
        and step.lake.s3.list_objects_v2(Bucket=BUCKET, Prefix="curated-staging/")["KeyCount"] == 0
    )
    assert emitted(capsys.readouterr().out)[("curation_failed", "api-x")] == 1
    # And no view is created over a source never curated
    with pytest.raises(step.lake.s3.exceptions.NoSuchKey):
        step.views("api-x")


def test_the_views_run_after_the_first_curation_and_again_when_the_columns_change(step: Step) -> None:
    # Given a run curated, its views created
    step.run("manual-a", 3, {"api-x": 1})
    step.check(typed_sources())
    step.check(typed_sources(), minutes=20)
    assert step.views("api-x")["state"] == "running" and len(step.athena.statements()) == 3
    # When later checks run with the same columns, and another run of the same date is curated
    step.check(typed_sources(), minutes=35)
    step.run("manual-b", 2, {"api-x": 1})
    step.check(typed_sources(), minutes=50)
    step.check(typed_sources(), minutes=65)
    # Then the views are not created again
    statements = step.athena.statements()
    assert step.views("api-x")["state"] == "done" and [s.split(" ")[0] for s in statements] == [
        "UNLOAD",
        "CREATE",
        "CREATE",
        "UNLOAD",
    ]
    # And when the columns change (a field accepted), the views are created again, of the new columns
    wider = {**COLUMNS, "price": "double"}
    step.check(typed_sources(wider), minutes=80)
    assert step.athena.statements()[4:] == view_statements(typed_sources(wider).get("api-x"))
    assert '"price"' in step.athena.statements()[4]
    step.check(typed_sources(wider), minutes=95)
    step.check(typed_sources(wider), minutes=110)
    assert len(step.athena.statements()) == 6 and step.views("api-x")["state"] == "done"


def test_a_check_starts_at_most_its_bound_oldest_runs_first(step: Step) -> None:
    # Given five complete runs of five dates, planned in that order
    runs = [f"manual-{n}" for n in range(5)]
    for n, run_id in enumerate(runs):
        step.lake.run(run_id, step.clock - timedelta(days=4 - n, hours=2), {"api-x": fanout(1)}, "manual")
        step.lake.land(run_id, "api-x", [1])
    # When checks that start three queries at most run
    first = step.check(typed_sources(), max_starts=3)
    second = step.check(typed_sources(), minutes=20, max_starts=3)
    # Then the first starts the oldest three runs' UNLOADs (all planned now by moto's clock: by id), the next the
    # two views and one run, then the last
    assert first.curation is not None and second.curation is not None
    assert [run.run_id for run in first.curation.runs if run.state is State.RUNNING] == runs[:3]
    assert second.curation.started == 3 and [s.split(" ")[0] for s in step.athena.statements()[3:]] == [
        "CREATE",
        "CREATE",
        "UNLOAD",
    ]
    third = step.check(typed_sources(), minutes=35, max_starts=3)
    assert third.curation is not None and third.curation.started == 1
    assert {run.run_id: run.state for run in third.curation.runs} == dict.fromkeys(runs[:4], State.DONE) | {
        runs[4]: State.RUNNING
    }


def test_two_runs_of_one_date_are_curated_one_after_the_other(step: Step) -> None:
    # Given two complete runs of the same ingestion date
    step.run("manual-a", 3, {"api-x": 1})
    step.run("manual-b", 2, {"api-x": 1})
    # When the check runs, then again
    first = step.check(typed_sources())
    # Then the date is curated for the older run first; the newer one waits for it (its prefix would be emptied
    # under the running UNLOAD), and is started at the next check
    assert first.curation is not None
    assert [(run.run_id, run.state) for run in first.curation.runs] == [("manual-a", State.RUNNING), ("manual-b", None)]
    step.check(typed_sources(), minutes=20)
    assert step.marker("api-x", "manual-b")["state"] == "running"
    assert step.athena.statements()[0].replace("run=manual-a", "run=manual-b") == step.athena.statements()[-1]


def test_a_curation_whose_check_stopped_before_recording_its_query_is_started_again(step: Step) -> None:
    # Given a marker left "starting" by a check that stopped (its Lambda timed out) before it started the UNLOAD
    step.run("manual-a", 2, {"api-x": 1})
    day = (step.clock - timedelta(hours=2)).date().isoformat()
    marker = {"source": "api-x", "run_id": "manual-a", "ingestion_date": day, "state": "starting"}
    body = json.dumps({**marker, "started_at": step.clock.isoformat()})
    step.lake.s3.put_object(Bucket=BUCKET, Key=marker_key("api-x", "manual-a"), Body=body)
    # When a check runs soon after, then one a quarter of an hour later, then the next
    step.check(typed_sources(), minutes=5)
    assert step.athena.statements() == [] and step.marker("api-x", "manual-a")["state"] == "starting"
    step.check(typed_sources(), minutes=16)
    stopped = step.marker("api-x", "manual-a")
    step.check(typed_sources(), minutes=31)
    # Then the stale marker counts as a failed attempt, and the check after starts the UNLOAD again (attempt 2)
    assert (stopped["state"], stopped["reason"]) == ("failed", "the check that started it stopped first")
    assert len(step.athena.statements()) == 1 and step.marker("api-x", "manual-a")["attempt"] == 2


def test_the_stacks_views_are_created_at_the_first_check_and_again_when_they_change(step: Step) -> None:
    # Given no run at all, and a view over every run's summary
    runs_view = "CREATE OR REPLACE VIEW apilake_runs AS\nSELECT run_id FROM run_summary"
    curation = Curation(step.lake.s3, BUCKET, step.athena, WORKGROUP, DATABASE, stack_views=[runs_view])
    # When the curated step runs three times, the third with the view changed
    for statements in ([runs_view], [runs_view], [runs_view + ", source"]):
        curation.stack_views = statements
        summary = curation.advance([], step.clock)
    # Then the view was created at the first, not at the second, and again at the third
    assert step.athena.statements() == [runs_view, runs_view + ", source"]
    assert summary.views == {"": State.RUNNING}
    assert (
        json.loads(step.lake.s3.get_object(Bucket=BUCKET, Key="ledger/state/views.json")["Body"].read())["source"] == ""
    )


def curated_keys(step: Step, day: Any) -> list[str]:
    listed = step.lake.s3.list_objects_v2(Bucket=BUCKET, Prefix=curated.curated_prefix("api-x", day))
    return [obj["Key"] for obj in listed.get("Contents", [])]
