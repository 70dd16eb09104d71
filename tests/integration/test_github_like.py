"""Parent-child sources end to end in-process: GitHub's repos (the parent, Link-header pages) and each repo's
issues (the child, ``/repos/{owner}/{repo}/issues``, Link-header pages too), through the planner, both workers
and the completeness check, against moto and a GitHub-like vendor on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from apilake.children import child_shard
from apilake.lake import page_key
from apilake.ledger import Ledger
from apilake.marks import MarkStore
from apilake.report import build_report
from apilake_cli.output import print_status, status_document
from apilake_cli.redrive import redrive
from apilake_dev.local.event_source import LambdaContextStub
from apilake_dev.vendors.fake import FakeVendor
from apilake_dev.vendors.github_like import GitHubLikeVendor, Repo, sources
from tests.conftest import load_event, load_handler_module
from tests.integration.conftest import API_KEY, BUCKET, STAGE, Harness, emulated_harness

RUN = "sched-20261126T010000Z"  # the run events/planner.json starts
DAY = datetime(2026, 11, 26).date()
# 12 repos, 5 a page: 3 pages of repos; issues 10 a page: none, one page, a full page, several pages.
REPOS = [
    Repo("octo-org", "hello-world", 0),
    Repo("octo-org", "socket.io", 7),
    Repo("octocat", "Spoon-Knife", 23),
    Repo("octocat", "linguist", 10),
    Repo("someone", "empty", 0),
    Repo("someone", "one", 1),
    Repo("dotted.owner", "x", 12),
    Repo("octo-org", "octo_repo", 30),
    Repo("a", "b", 2),
    Repo("a", "c", 0),
    Repo("b", "hello-world", 4),
    Repo("c-c", "last", 11),
]


@contextmanager
def github_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, include: bool = False, incremental: bool = False
) -> Iterator[tuple[Harness, GitHubLikeVendor]]:
    vendor = GitHubLikeVendor(REPOS, token=API_KEY)
    configs = sources(vendor.base_url, include=include, incremental=incremental)
    # The harness keeps its vendor only to hand it back: a GitHub-like one serves as well.
    with vendor, emulated_harness(cast(FakeVendor, vendor), configs, tmp_path, monkeypatch) as harness:
        # What the template sets on the parent's worker (make template): the child's queue by its URL.
        monkeypatch.setenv("APILAKE_CHILD_QUEUE_URLS", json.dumps({"issues": harness.queues["issues"]}))
        yield harness, vendor


def issues_landed(harness: Harness) -> list[tuple[str, int]]:
    """Every issue that landed, as (repo full name, number)."""
    return [(issue["repository_url"].split("/repos/", 1)[1], issue["number"]) for issue in harness.records("issues")]


def judge(harness: Harness) -> dict[str, Any]:
    """The completeness check's summary, seven hours after the run (due after six)."""
    harness.monkeypatch.setenv("APILAKE_LAKE_BUCKET", BUCKET)
    harness.monkeypatch.setenv("APILAKE_STAGE", STAGE)
    harness.monkeypatch.setenv("APILAKE_SOURCES_FILE", str(harness.sources_path))
    at = datetime.now(UTC) + timedelta(hours=7)  # the planner wrote the manifest now
    event = {**load_event("completeness.json"), "time": at.isoformat()}
    summary: dict[str, Any] = load_handler_module("completeness").handler(event, LambdaContextStub("completeness", 120))
    return summary


def test_every_issue_of_every_repo_lands_exactly_once_and_the_run_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with github_harness(tmp_path, monkeypatch, include=True) as (harness, vendor):
        # Given the nightly run planned (the issues with parent.include): the planner plans the repos, and lists
        # issues as their child
        summary = harness.plan(load_event("planner.json"))
        assert summary["messages"] == {"repos": 1}
        manifest = harness_manifest(harness)
        assert manifest.sources["issues"].parent is not None and manifest.sources["issues"].shards == []
        # When the repos' queue is drained, then the issues'
        repos, issues = harness.drain("repos"), harness.drain("issues")
        # Then every repo lands, and every issue of every repo, each exactly once
        assert repos.failed == issues.failed == 0 and repos.handler_errors == issues.handler_errors == []
        assert harness.keys("repos") == [page_key("repos", DAY, "all", page) for page in (1, 2, 3)]
        landed = issues_landed(harness)
        assert sorted(landed) == sorted(vendor.state.issues()) and len(set(landed)) == len(landed)
        # And each repo's issues are under a shard of their own, named after the repo, page by page
        shards = {repo: child_shard({"owner": repo.owner, "repo": repo.name}) for repo in REPOS}
        assert shards[REPOS[2]].startswith("p-octocat-spoon-knife-")
        pages = {repo: max(1, -(-repo.issues // 10)) for repo in REPOS}
        assert harness.keys("issues") == sorted(
            page_key("issues", DAY, shards[repo], page) for repo in REPOS for page in range(1, pages[repo] + 1)
        )
        # And each repo's issues were asked for at its own path, page 1 first, once
        assert vendor.requests_to("/repos/dotted.owner/x/issues") == [
            "/repos/dotted.owner/x/issues?state=all&per_page=10",
            "/repos/dotted.owner/x/issues?state=all&per_page=10&page=2",
        ]
        # And each issue carries its repo's owner and name (parent.include), each page's metadata the repo's values
        records = harness.records("issues")
        assert all(
            issue["repository_url"].endswith(f"/repos/{issue['_parent_owner']}/{issue['_parent_repo']}")
            for issue in records
        )
        assert {(issue["_parent_owner"], issue["_parent_repo"]) for issue in records} == {
            (repo.owner, repo.name) for repo in REPOS if repo.issues
        }
        head = harness.s3.head_object(Bucket=BUCKET, Key=page_key("issues", DAY, shards[REPOS[6]], 2))
        assert head["Metadata"]["parent-values"] == '{"owner":"dotted.owner","repo":"x"}'
        # And the status says the run is complete: the issues' shards are those the repos announced, each ended
        status = harness.status(RUN)
        assert status.complete
        child = next(source for source in status.sources if source.source == "issues")
        assert child.parent == "repos" and sorted(s.shard for s in child.shards) == sorted(shards.values())
        assert sum(s.landed_pages for s in child.shards) == sum(pages.values())
        # And the completeness check judges both sources complete, the issues with every record
        verdicts = {verdict["source"]: verdict for verdict in judge(harness)["sources"]}
        assert verdicts["issues"]["complete"] and verdicts["repos"]["complete"]
        assert verdicts["issues"]["records_landed"] == len(vendor.state.issues())
        assert verdicts["issues"]["pages_missing"] == 0


def test_a_redelivered_parent_page_sends_no_child_work_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with github_harness(tmp_path, monkeypatch) as (harness, vendor):
        # Given the run landed in full
        harness.plan(load_event("planner.json"))
        harness.drain("repos")
        harness.drain("issues")
        asked = len(vendor.state.seen)
        # When page 2 of the repos is delivered again (and page 1, with its chain's continuation)
        for page, cursor in ((1, None), (2, f"{vendor.base_url}/user/repos?per_page=5&page=2")):
            item = {"run_id": RUN, "source": "repos", "ingestion_date": DAY.isoformat(), "shard": "all", "page": page}
            harness.send("repos", {**item, "cursor": cursor} if cursor else item)
        again = harness.drain("repos")
        # Then the pages land again unchanged, and no issue work is enqueued: the issues' queue is empty
        assert again.deleted == 2 and again.failed == 0
        assert harness.drain("issues").received == 0
        # And only the two repos pages were asked for again
        assert len(vendor.state.seen) == asked + 2
        assert sorted(issues_landed(harness)) == sorted(vendor.state.issues())
        assert harness.status(RUN).complete


def test_a_child_page_that_fails_for_good_leaves_the_run_incomplete_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with github_harness(tmp_path, monkeypatch) as (harness, vendor):
        # Given page 2 of one repo's issues answers 404 every time
        vendor.break_page("/repos/octocat/Spoon-Knife/issues", 2)
        # When the run is planned and both queues drained
        harness.plan(load_event("planner.json"))
        harness.drain("repos")
        harness.drain("issues")
        # Then that page reached the issues' DLQ, and every other issue landed
        assert len(harness.dlq_bodies("issues")) == 1
        lost = {("octocat/Spoon-Knife", number) for number in range(13, 0, -1)}  # page 2 and (never asked) 3
        assert sorted(issues_landed(harness)) == sorted(set(vendor.state.issues()) - lost)
        # And the status says the run is not complete: the repos are, the issues miss that shard's page 2
        status = harness.status(RUN)
        child = next(source for source in status.sources if source.source == "issues")
        assert not status.complete and not child.complete and child.parent_note is None
        broken = child_shard({"owner": "octocat", "repo": "Spoon-Knife"})
        assert {s.shard: s.missing_pages for s in child.shards if s.missing_pages} == {broken: [2]}
        assert "404" in next(s for s in child.shards if s.shard == broken).why_missing(2)
        # And `apilake status` says so: the issues' shards counted, the one not complete shown with its page
        capsys.readouterr()
        print_status(status, None)
        printed = capsys.readouterr().out
        assert "  issues: INCOMPLETE\n    child of repos: 12 shard(s) announced, 11 complete\n" in printed
        assert f"    shard {broken} (chain): 1/? pages, chain NOT ended\n" in printed
        assert "      missing page 2: PermanentHttpError: 404 from " in printed
        document = status_document(status)["sources"][1]
        assert (document["parent"], document["complete"], document["pages_landed"]) == ("repos", False, 16)
        # And the report and the completeness check name it
        ledger = Ledger(harness.s3, BUCKET)
        manifest = ledger.read_manifest(RUN)
        assert manifest is not None
        report = build_report(ledger, manifest, None, datetime.now(UTC))
        assert not report.complete and report.pages_missing == 1
        assert any(broken in reason and "page 2" in reason for reason in report.reasons)
        verdicts = {verdict["source"]: verdict for verdict in judge(harness)["sources"]}
        assert verdicts["repos"]["complete"] and not verdicts["issues"]["complete"]
        assert verdicts["issues"]["pages_missing"] == 1


def test_while_the_parent_is_not_complete_neither_is_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with github_harness(tmp_path, monkeypatch) as (harness, vendor):
        # Given the repos' page 3 fails for good: its repos' issues are never announced
        vendor.break_page("/user/repos", 3, 404)
        harness.plan(load_event("planner.json"))
        harness.drain("repos")
        harness.drain("issues")
        # Then every announced issue shard is complete, yet the issues are not: their parent is not
        status = harness.status(RUN)
        child = next(source for source in status.sources if source.source == "issues")
        assert len(child.shards) == 10 and all(shard.complete for shard in child.shards)
        assert not child.complete and child.parent_note is not None and "'repos'" in child.parent_note
        report = build_report(Ledger(harness.s3, BUCKET), harness_manifest(harness), None, datetime.now(UTC))
        issues = next(source for source in report.sources if source.source == "issues")
        assert not issues.complete and any("parent 'repos'" in reason for reason in report.reasons)


def harness_manifest(harness: Harness) -> Any:
    manifest = Ledger(harness.s3, BUCKET).read_manifest(RUN)
    assert manifest is not None
    return manifest


def test_an_incremental_parent_s_mark_waits_for_its_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with github_harness(tmp_path, monkeypatch, incremental=True) as (harness, vendor):
        marks = MarkStore(harness.s3, BUCKET)
        # Given the repos incremental (on updated_at), and page 2 of one repo's issues failing for good in a run
        vendor.break_page("/repos/octocat/Spoon-Knife/issues", 2)
        harness.plan({"sources": ["repos"], "run_id": "r1", "ingestion_date": "2026-11-26"})
        harness.drain("repos")
        harness.drain("issues")
        first = {source.source: source.complete for source in harness.status("r1").sources}
        assert first == {"repos": True, "issues": False}
        # When the next run is planned: the repos' mark does not move (the next run would not list that repo again,
        # and its issues would never be fetched): the repos are asked for from the initial value again
        harness.plan({"sources": ["repos"], "run_id": "r2", "ingestion_date": "2026-11-27"})
        assert marks.read("repos")[0] is None and sorted(marks.open_runs("repos")) == ["r1", "r2"]
        # When the vendor recovers, the issues' DLQ is redriven and everything drains: both runs complete
        with vendor.state.lock:
            vendor.state.broken.clear()
        assert redrive(harness.sqs, harness.dlqs["issues"], harness.queues["issues"]) == 1
        harness.drain("repos")
        harness.drain("issues")
        assert harness.status("r1").complete and harness.status("r2").complete
        initial = "/user/repos?per_page=5&since=2026-01-01T00%3A00%3A00Z"
        assert [request for request in vendor.requests_to("/user/repos") if request == initial] == [initial] * 2
        # Then the next planning moves the mark to the highest updated_at the repos landed
        harness.plan({"sources": ["repos"], "run_id": "r3", "ingestion_date": "2026-11-28"})
        mark = marks.read("repos")[0]
        assert mark is not None and mark.value == "2026-11-12T00:00:00Z"
        assert marks.open_runs("repos") == ["r3"]
