"""The demo flow end to end: moto's server, fake vendors, worker containers, Glue, DuckDB, status."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apilake import curated
from apilake.config import load_sources
from apilake.report import report_keys
from apilake_cli.main import main
from apilake_dev import demo, query
from apilake_dev.local.aws import LocalAws
from apilake_dev.vendors.fake import FakeVendor, Fault

pytestmark = pytest.mark.slow

EXAMPLES = load_sources(demo.EXAMPLE_SOURCES)
# The example that fans out (its page count known to the planner), and the ones that authenticate.
FAN_OUT = next(s for s in EXAMPLES.sources if s.pagination.type in ("page_number", "offset"))
SECRETS = demo.authenticated(demo.EXAMPLE_SOURCES)
BYTES_ROW = re.compile(r"^(?P<source>[\w-]+)\s*\|\s*(?P<raw>\d+)\s*\|\s*(?P<curated>\d+)\s*\|", re.MULTILINE)


def test_the_demo_lands_every_vendor_record_once_and_reports_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the demo on a tenth of its data set, throttling and 5xx included
    # When it runs, through the CLI as `make demo` runs it
    code = main(["--home", str(tmp_path), "demo", "--scale", "0.1"])
    printed = capsys.readouterr().out
    # Then it exits 0, and DuckDB over the lake folder counts exactly the vendors' records, none twice
    assert code == 0, printed
    totals = {d.name: d.total for d in demo.datasets(0.1)}
    changes = demo.changes(0.1)
    _, rows = query.run(tmp_path / "lake", "SELECT source, count(*), count(DISTINCT id) FROM raw GROUP BY 1 ORDER BY 1")
    # (an incremental example's changed records land once more, in its second run)
    expected = {s: (n + changes.get(s, 0), n) for s, n in totals.items()}
    assert {source: (count, distinct) for source, count, distinct in rows} == expected
    # And no message is left in any DLQ, and status says every source is complete
    assert all((tmp_path / "dlq" / f"{s}.jsonl").read_text() == "" for s in totals)
    assert main(["--home", str(tmp_path), "status"]) == 0
    status = capsys.readouterr().out
    assert "complete: yes" in status and "INCOMPLETE" not in status
    # And the summary and the example queries were printed
    assert "run sched-20261126T010000Z: drained" in printed
    # And the incremental example ran twice, the second time asking after the mark, which was printed
    assert changes and "run demo-20261127T010000Z: drained" in printed and "requests 2nd" in printed
    assert "mark: none yet" in printed and "(moved " in printed
    assert all(title in printed for title, _ in demo.example_queries())
    # And the curated zone has one typed row per vendor record, the changed ones from the second run's date
    for config in EXAMPLES.sources:
        second_run = "count(*) FILTER (WHERE ingestion_date = DATE '2026-11-27')"
        current = f"SELECT count(*), count(DISTINCT id), {second_run} FROM {curated.current_view(config.name)}"
        _, found = query.run(tmp_path / "lake", current)
        assert found == [(totals[config.name], totals[config.name], changes.get(config.name, 0))]
    # And the demo ends with a query on a _current view, then raw vs curated bytes per source
    *_, (on_current, _), (on_bytes, _) = demo.example_queries()
    assert "_current" in on_current and "raw vs curated" in on_bytes
    ending = printed[printed.index(on_bytes) :].split("\n\nNext:")[0]
    sizes = {m["source"]: m for m in BYTES_ROW.finditer(ending)}
    assert sorted(sizes) == sorted(totals) and all(int(m["raw"]) > 0 and int(m["curated"]) > 0 for m in sizes.values())
    # And each run's report judges the schema drift against the pinned columns: the first run's records are as
    # declared; in the second, the changed records carry `revision`, which the examples leave out on purpose
    first, second = (
        {
            source["source"]: source["drift"]
            for source in json.loads((tmp_path / "lake" / report_keys(run)[0]).read_text())["sources"]
        }
        for run in ("sched-20261126T010000Z", "demo-20261127T010000Z")
    )
    assert sorted(first) == sorted(totals)
    assert all(
        drift["pages_observed"] > 0 and not (drift["new"] or drift["missing"] or drift["changed"])
        for drift in first.values()
    )
    assert list(second) == list(changes) and all(list(drift["new"]) == ["revision"] for drift in second.values())
    # And the run summaries are one view, under Athena's name
    _, runs = query.run(tmp_path / "lake", f"SELECT count(DISTINCT run_id), count(*) FROM {curated.RUNS_VIEW}")
    assert runs == [(2, len(totals) + len(changes))]
    # And `apilake query` works on the kept lake folder after the run
    last = EXAMPLES.sources[-1].name
    assert main(["--home", str(tmp_path), "query", f"select count(*) from raw where source = '{last}'"]) == 0
    printed_rows = capsys.readouterr().out.splitlines()
    assert printed_rows[2].strip() == str(expected[last][0]) and printed_rows[3] == "(1 row)"


def test_a_page_that_always_fails_ends_in_the_dlq_and_status_names_it(tmp_path: Path) -> None:
    # Given the fan-out example's page 2 answering 500 whatever happens, redelivery in seconds, retries short
    name = FAN_OUT.name

    def broken_page(vendor: FakeVendor) -> None:
        vendor.inject(FAN_OUT.pagination.type, name, 2, Fault("status", status=500), forever=True)

    demo_run = demo.run_demo(
        tmp_path,
        scale=0.1,
        weather=broken_page,
        source_overrides={"retries": {"max_attempts": 2, "base_delay_seconds": 0.01}, "budget": {"max_concurrency": 2}},
        visibility_timeout=2,
        echo=lambda line: None,
        second_run=False,
    )
    result, sets = demo_run.first, demo_run.datasets
    # Then the other sources, and all of its pages but page 2, landed
    assert result.drained
    _, rows = query.run(tmp_path / "lake", "SELECT source, count(*) FROM raw GROUP BY 1 ORDER BY 1")
    landed = dict(rows)
    totals = {d.name: d.total for d in sets}
    size: int | None = getattr(FAN_OUT.pagination, "page_size", None) or getattr(FAN_OUT.pagination, "limit", None)
    assert size is not None
    page_size = size
    assert totals[name] > page_size, "the data set must have a page 2"
    assert landed[name] == totals[name] - min(page_size, totals[name] - page_size)
    others = [s.name for s in EXAMPLES.sources if s.name != name]
    assert {s: landed[s] for s in others} == {s: totals[s] for s in others}
    # And the page's message is in its DLQ, alone
    assert result.sources[name].dlq == 1
    dead = [json.loads(line) for line in (tmp_path / "dlq" / f"{name}.jsonl").read_text().splitlines()]
    assert [json.loads(m["body"])["page"] for m in dead] == [2]
    # And status names the missing page and why
    assert result.status is not None and not result.status.complete
    broken = next(s for s in result.status.sources if s.source == name)
    assert broken.shards[0].missing == [2]
    assert "500 from" in broken.shards[0].failures[2]


def test_resources_come_from_the_template(tmp_path: Path) -> None:
    from apilake.names import queue_name
    from apilake_dev.local.aws import deploy, load_template

    # Given the example sources and the template as it would be for them
    sources = load_sources(demo.EXAMPLE_SOURCES)
    template = load_template(demo.EXAMPLE_SOURCES)
    with LocalAws() as aws:
        # When it is deployed to the emulator
        deployment = deploy(template, aws, demo.EXAMPLE_SOURCES)
        sqs = aws.client("sqs")
        # Then every source has its worker, its queue as the template says, named as the planner looks it up
        assert sorted(w.source for w in deployment.workers) == sorted(s.name for s in sources.sources)
        stage = deployment.planner_environment["APILAKE_STAGE"]
        for worker in deployment.workers:
            source = sources.get(worker.source)
            queue = template["Resources"][worker.function.replace("Worker", "Queue")]["Properties"]
            attributes = sqs.get_queue_attributes(QueueUrl=worker.queue_url, AttributeNames=["All"])["Attributes"]
            redrive = json.loads(attributes["RedrivePolicy"])
            assert int(attributes["VisibilityTimeout"]) == queue["VisibilityTimeout"]
            assert (
                redrive["maxReceiveCount"]
                == queue["RedrivePolicy"]["maxReceiveCount"]
                == source.worker.max_receive_count
            )
            assert redrive["deadLetterTargetArn"].endswith(worker.dlq_url.rsplit("/", 1)[1])
            assert worker.max_concurrency == source.budget.max_concurrency and worker.batch_size == 10
            assert worker.environment["APILAKE_SOURCE"] == worker.source
            assert worker.queue_url == sqs.get_queue_url(QueueName=queue_name(stage, worker.source))["QueueUrl"]


def test_run_local_drives_the_flow_against_the_vendors_a_user_configures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given "the user's" APIs (here the fake vendors) in a sources file of their own, and their key
    with FakeVendor(demo.datasets(0.05), api_key="user-key", protected=set(SECRETS)) as vendor:
        sources = demo.demo_sources(vendor, tmp_path / "my-sources.yaml")
        secrets = [f"--secret={name}=user-key" for name in SECRETS.values()]
        # When `apilake run --local` runs with the planner event of a backfill-like manual run
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"run_id": "my-run", "ingestion_date": "2026-11-26"}))
        code = main(
            ["--home", str(tmp_path), "run", "--local", "--sources", str(sources), "--event", str(event), *secrets]
        )
    printed = capsys.readouterr().out
    # Then the run is complete, and every record is in the lake folder
    assert code == 0, printed
    assert "run my-run (ingestion date 2026-11-26): complete: yes" in printed
    _, rows = query.run(tmp_path / "lake", "SELECT source, count(*) FROM raw GROUP BY 1 ORDER BY 1")
    assert dict(rows) == {d.name: d.total for d in demo.datasets(0.05)}
    # And the sources file's columns were curated after the run, every record typed in the lake folder
    assert "curated (Parquet in the lake folder): " in printed
    _, rows = query.run(tmp_path / "lake", "SELECT count(*) FROM source_api_a_curated WHERE seq IS NOT NULL")
    assert rows == [({d.name: d.total for d in demo.datasets(0.05)}["api-a"],)]


def test_run_local_refuses_a_secret_without_a_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "run", "--local", "--secret", "vendors/key"]) == 2
    assert "--secret 'vendors/key': expected NAME=VALUE" in capsys.readouterr().err
