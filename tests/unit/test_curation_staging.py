"""The curated step's staging and its locks: a date busy while any claim of it runs (a lost claim, another's
curation through the date's lock), the swap repeated after a stop, the view DDL's request token, and a manifest
that does not parse stopping no curation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from apilake import curated, staging
from apilake.completeness import CompletenessCheck
from apilake.curation import Curation, State, lock_key, marker_key, request_marker_key, request_tasks
from apilake.exceptions import ApilakeError
from apilake.ledger import manifest_key
from tests.unit.test_completeness import BUCKET, STAGE, moto_lake  # noqa: F401 - moto_lake: the fixture "lake"
from tests.unit.test_curation import DATABASE, WORKGROUP, Step, curated_keys, curation_step, typed_sources  # noqa: F401


def test_a_check_that_loses_a_runs_claim_starts_no_other_run_of_that_date(step: Step) -> None:
    # Given two complete runs of one date, the older one claimed by a check, and a late check that read no marker
    # for it (it read before the first one wrote)
    step.run("manual-a", 3, {"api-x": 1})
    step.run("manual-b", 2, {"api-x": 1})
    step.check(typed_sources())
    late = step.curation()
    real_read = late._read

    def stale_read(key: str, model: Any) -> Any:
        doc = real_read(key, model)
        if key == marker_key("api-x", "manual-a"):
            doc.model, doc.etag = None, None
        return doc

    late._read = stale_read  # type: ignore[method-assign]
    # When the late check goes on
    check = CompletenessCheck(step.lake.ledger, typed_sources(), step.lake.sqs, STAGE, timedelta(minutes=360), late)
    summary = check.check(step.clock + timedelta(minutes=5))
    # Then it loses manual-a's claim and does not go on to manual-b of the same date: one UNLOAD in all
    assert summary.curation is not None and summary.curation.started == 0
    assert len(step.athena.statements()) == 1
    with pytest.raises(step.lake.s3.exceptions.NoSuchKey):
        step.marker("api-x", "manual-b")


def test_a_date_curated_by_apilake_curate_is_not_started_by_the_check_until_that_ends(step: Step) -> None:
    # Given a complete run, and apilake curate's curation of the same date started first
    step.run("manual-a", 2, {"api-x": 1})
    day = (step.clock - timedelta(hours=2)).date()
    source = typed_sources().get("api-x")
    tasks = request_tasks(source, [day], "curate-1", step.clock)
    requested = step.curation().advance(tasks, step.clock, emit=False)
    assert [run.state for run in requested.runs] == [State.RUNNING]
    lock = step.lake.s3.get_object(Bucket=BUCKET, Key=lock_key("api-x", day))["Body"].read().decode()
    assert request_marker_key("api-x", "curate-1", day) in lock
    # When the check runs: the request's query has SUCCEEDED by then (moto), nobody has followed it yet
    summary = step.check(typed_sources())
    # Then the check follows the lock's marker first (done, its file swapped in), then starts its own curation
    request_marker = step.lake.s3.get_object(Bucket=BUCKET, Key=request_marker_key("api-x", "curate-1", day))
    assert '"state":"done"' in request_marker["Body"].read().decode()
    assert summary.curation is not None and [run.state for run in summary.curation.runs] == [State.RUNNING]
    assert len(curated_keys(step, day)) == 1
    # And while the check's query runs, apilake curate's next request finds the date busy and starts nothing
    held = Curation(step.lake.s3, BUCKET, step.athena, WORKGROUP, DATABASE)
    held._follow = lambda doc, now: None  # type: ignore[method-assign]  # the check's query still runs
    again = held.advance(request_tasks(source, [day], "curate-2", step.clock), step.clock, emit=False)
    assert [run.state for run in again.runs] == [None] and len(step.athena.statements()) == 2


class StopsAtDelete:
    """An S3 client whose first DeleteObjects fails (the check stopped in the swap)."""

    def __init__(self, client: Any) -> None:
        self.client, self.stopped = client, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def delete_objects(self, **kwargs: Any) -> Any:
        if not self.stopped:
            self.stopped = True
            raise ApilakeError("stopped")
        return self.client.delete_objects(**kwargs)


def test_a_swap_repeated_after_a_stop_ends_as_one_swap(step: Step) -> None:
    # Given a date's live objects and an UNLOAD's staged files
    s3, day = step.lake.s3, (step.clock).date()
    live, staged = curated.curated_prefix("api-x", day), staging.staging_prefix("api-x", day, "manual-a", 1)
    for key in (f"{live}old-1.parquet", f"{live}old-2.parquet", f"{staged}new-1.parquet", f"{staged}new-2.parquet"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"PAR1")
    # When a swap stops after its copies (before any delete), and is done again, and once more
    with pytest.raises(ApilakeError):
        staging.swap(StopsAtDelete(s3), BUCKET, staged, live)
    names = ("new-1", "new-2", "old-1", "old-2")
    assert curated_keys(step, day) == [f"{live}{name}.parquet" for name in names]
    swapped = [staging.swap(s3, BUCKET, staged, live) for _ in range(2)]
    # Then the live prefix holds the new files only (never empty between), the staging prefix nothing
    assert swapped == [2, 0]
    assert curated_keys(step, day) == [f"{live}new-1.parquet", f"{live}new-2.parquet"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=staged)["KeyCount"] == 0


def test_view_ddl_changed_back_is_a_new_query(step: Step) -> None:
    # Given the stack's view changed A -> B -> A at three checks
    first, second = "CREATE OR REPLACE VIEW v AS\nSELECT 1 AS a", "CREATE OR REPLACE VIEW v AS\nSELECT 2 AS a"
    curation = Curation(step.lake.s3, BUCKET, step.athena, WORKGROUP, DATABASE)
    for minutes, statement in ((0, first), (15, second), (30, first)):
        curation.stack_views = [statement]
        curation.advance([], step.clock + timedelta(minutes=minutes))
    # Then each is started with its own request token (a reused one would make Athena return the first query)
    assert step.athena.statements() == [first, second, first]
    assert len({call["ClientRequestToken"] for call in step.athena.started}) == 3


def test_a_recent_manifest_that_does_not_parse_stops_no_curation(step: Step) -> None:
    # Given a complete run, and a manifest beside it that is not one
    step.run("manual-a", 2, {"api-x": 1})
    step.lake.s3.put_object(Bucket=BUCKET, Key=manifest_key("manual-broken"), Body=b"{}")
    # When the check runs, then it fails naming the manifest, after it started the run's curation
    with pytest.raises(ApilakeError, match=r"run=manual-broken/manifest\.json"):
        step.check(typed_sources())
    assert step.marker("api-x", "manual-a")["state"] == "running" and len(step.athena.statements()) == 1
