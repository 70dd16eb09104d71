"""What on-call relies on in template.yaml (issue 13): the completeness check and its alarms, the dashboard, the
parameter that skips reserved concurrency, and the environment `sam local invoke` overrides."""

from __future__ import annotations

import json
import re
from datetime import date
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from apilake import curation
from apilake.config import SourcesFile
from apilake.curated import current_view, recent_view
from apilake.exceptions import ConfigError
from apilake.names import dlq_name, logical_id
from apilake.observability import Metric
from apilake_dev.template.generate import ALARM_RULE_MAX_CHARS, check_sources_alarm_rule, main, parse_template
from tests.template.conftest import ROOT
from tests.template.test_generate import TWO_NEW_SOURCES, write_sources
from tests.template.test_template import by_type, statements

NO_VALUE = {"Ref": "AWS::NoValue"}
TOPIC = [{"Ref": "AlarmTopic"}]
CHECK_PERIOD = {"Fn::FindInMap": ["CompletenessCheck", {"Ref": "CompletenessCheckMinutes"}, "PeriodSeconds"]}
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def by_sid(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements(role) if "Sid" in s}


# ── the completeness check ──


def test_the_completeness_check_is_the_function_the_contract_names(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    function = resources["Completeness"]["Properties"]
    assert function["FunctionName"] == {"Fn::Sub": "apilake-${Stage}-completeness"}
    assert (function["CodeUri"], function["Handler"]) == ("functions/completeness/", "app.handler")
    assert (ROOT / "functions" / "completeness").is_dir()
    assert function["Role"] == {"Fn::GetAtt": ["CompletenessRole", "Arn"]}
    assert function["MemorySize"] == 256
    # And it has 300 s to read the judged runs' markers, no longer than the shortest interval between checks
    check_minutes = template["Parameters"]["CompletenessCheckMinutes"]["AllowedValues"]
    assert function["Timeout"] == 300 <= 60 * min(check_minutes)
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "CompletenessLogGroup"}
    # And how long a run has to complete is the stack's parameter, 6 hours unless told otherwise
    variables = function["Environment"]["Variables"]
    assert variables["APILAKE_COMPLETE_WITHIN_MINUTES"] == {"Ref": "RunCompleteWithinMinutes"}
    assert template["Parameters"]["RunCompleteWithinMinutes"]["Default"] == 360


def test_the_completeness_check_runs_on_its_own_schedule_with_retries_and_a_dlq(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    [event] = resources["Completeness"]["Properties"]["Events"].values()
    schedule = event["Properties"]
    assert event["Type"] == "ScheduleV2"
    assert schedule["ScheduleExpression"] == {"Fn::Sub": "rate(${CompletenessCheckMinutes} minutes)"}
    assert template["Parameters"]["CompletenessCheckMinutes"]["Default"] == 15
    assert schedule["Name"] == {"Fn::Sub": "apilake-${Stage}-completeness"}
    assert schedule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert schedule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["CompletenessScheduleDeadLetterQueue", "Arn"]}}
    # And its event has the scheduled time the check judges as of, in the shape of the fixture
    scheduled = json.loads(schedule["Input"])
    fixture = json.loads((ROOT / "events" / "completeness.json").read_text())
    assert set(scheduled) <= set(fixture) and scheduled["time"] == "<aws.scheduler.scheduled-time>"
    # And its scheduler may invoke the check and dead-letter, nothing else
    role = resources["CompletenessSchedulerRole"]
    assert schedule["RoleArn"] == {"Fn::GetAtt": ["CompletenessSchedulerRole", "Arn"]}
    allowed = {json.dumps(s["Action"]): s["Resource"] for s in statements(role)}
    assert allowed['"lambda:InvokeFunction"'] == {"Fn::GetAtt": ["Completeness", "Arn"]}
    assert allowed['"sqs:SendMessage"'] == {"Fn::GetAtt": ["CompletenessScheduleDeadLetterQueue", "Arn"]}
    assert len(allowed) == 3  # and the key, for that encrypted queue


def test_the_completeness_role_reads_the_ledger_and_writes_run_reports_only(resources: dict[str, Any]) -> None:
    role = resources["CompletenessRole"]
    granted = {a for s in statements(role) for a in actions(s) if not a.startswith("ec2:")}
    assert granted == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        # the curated step's (apilake.curation), tested below
        *CURATION_ACTIONS,
    }
    sids = by_sid(role)
    assert sids["OwnLogGroup"]["Resource"] == {"Fn::GetAtt": ["CompletenessLogGroup", "Arn"]}
    assert sids["ReadLedger"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/ledger/*"}
    assert sids["ListLedger"]["Condition"] == {"StringLike": {"s3:prefix": ["ledger/*"]}}
    # And it writes the two report objects beside a run's manifest (ledger/runs/run=<R>/)
    write = sids["WriteRunReports"]
    assert actions(write) == ["s3:PutObject"]
    assert write["Resource"][:2] == [
        {"Fn::Sub": "${LakeBucket.Arn}/ledger/runs/run=*/report.json"},
        {"Fn::Sub": "${LakeBucket.Arn}/ledger/runs/run=*/report.html"},
    ]
    # And it reads the depth of the sources' dead-letter queues, found by their names
    dlqs = sids["ReadDlqDepths"]["Resource"]["Fn::Sub"]
    assert dlqs.endswith(":" + dlq_name("${Stage}", "*"))
    assert sids["UseLakeKey"]["Condition"]["StringEquals"]["kms:ViaService"] == [
        {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"},
        {"Fn::Sub": "athena.${AWS::Region}.amazonaws.com"},
    ]


CURATION_ACTIONS = {
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:GetBucketLocation",
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetTables",
    "glue:GetPartition",
    "glue:GetPartitions",
    "glue:BatchGetPartition",
    "glue:CreateTable",
    "glue:UpdateTable",
}


def test_the_completeness_role_curates_in_the_workgroup_and_writes_curated_and_the_views_only(
    resources: dict[str, Any],
) -> None:
    role = resources["CompletenessRole"]
    sids = by_sid(role)
    glue = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
    # Its queries run in the stack's workgroup only (whose scan cutoff bounds them), through its env
    athena = sids["CurateInTheWorkGroup"]
    assert actions(athena) == ["athena:StartQueryExecution", "athena:GetQueryExecution"]
    assert athena["Resource"]["Fn::Sub"].endswith(":workgroup/${AthenaWorkGroup}")
    variables = resources["Completeness"]["Properties"]["Environment"]["Variables"]
    assert variables["APILAKE_ATHENA_WORKGROUP"] == {"Ref": "AthenaWorkGroup"}
    assert variables["APILAKE_GLUE_DATABASE"] == {"Ref": "GlueDatabase"}
    # And it writes to the catalog only the views it creates (apilake.curated's names)
    views = sids["CreateTheViews"]
    assert actions(views) == ["glue:CreateTable", "glue:UpdateTable"]
    tables = [r["Fn::Sub"].removeprefix(f"{glue}:table/${{GlueDatabase}}/") for r in views["Resource"][2:]]
    assert tables == ["source_*_current", "source_*_recent", "apilake_runs"]
    assert fnmatch(current_view("api-a"), tables[0]) and fnmatch(recent_view("api-a"), tables[1])
    # And in S3 it writes (and deletes) under curated/, its staging prefix and the results' prefix, reads raw/ and
    # the staged objects (to copy them into curated/), and writes its markers
    writes = {
        r["Fn::Sub"] if isinstance(r, dict) else str(r)
        for s in statements(role)
        if "s3:PutObject" in actions(s) or "s3:DeleteObject" in actions(s)
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    assert {w for w in writes if "/ledger/" not in w} == {
        "${LakeBucket.Arn}/curated/*",
        "${LakeBucket.Arn}/curated-staging/*",
        "${AthenaResultsBucket.Arn}/results/*",
    }
    # The UNLOAD writes into a new prefix under curated-staging/, whose objects are copied, then deleted
    assert actions(sids["StageCurated"]) == [
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    ]
    assert sids["StageCurated"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/curated-staging/*"}
    # And it never reads curated/: a copy reads its source (the staged object) and writes its target
    reads = {
        r["Fn::Sub"]
        for s in statements(role)
        if "s3:GetObject" in actions(s)
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        if isinstance(r, dict) and "Fn::Sub" in r
    }
    assert "${LakeBucket.Arn}/curated/*" not in reads
    assert actions(sids["WriteCurated"]) == [
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    ]
    # Every key the curated step writes (apilake.curation's own functions name them), and no other ledger key
    patterns = [r["Fn::Sub"].removeprefix("${LakeBucket.Arn}/") for r in sids["WriteCurationMarkers"]["Resource"]]
    day = date(2026, 11, 26)
    written = [
        curation.marker_key("api-a", "sched-20261126T010000Z"),
        curation.request_marker_key("api-a", "r1", day),
        curation.lock_key("api-a", day),
        curation.views_key("api-a"),
        curation.views_key(curation.STACK_VIEWS),
    ]
    assert all(any(fnmatch(key, pattern) for pattern in patterns) for key in written), (written, patterns)
    assert not any(fnmatch("ledger/runs/run=x/manifest.json", p) or fnmatch("raw/x", p) for p in patterns)
    assert sids["ReadRaw"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/raw/*"}
    assert sids["ListRawAndCurated"]["Condition"] == {
        "StringLike": {"s3:prefix": ["raw/*", "curated/*", "curated-staging/*"]}
    }


@pytest.mark.parametrize(
    ("alarm", "metric"),
    [
        ("RunIncompleteAlarm", "sources_incomplete"),
        ("RunLandedNothingAlarm", "sources_landed_nothing"),
        ("CurationFailedAlarm", "curation_failed"),  # its sum over the sources, emitted by the curated step
    ],
)
def test_a_run_incomplete_or_empty_by_its_due_time_alarms(resources: dict[str, Any], alarm: str, metric: str) -> None:
    properties = resources[alarm]["Properties"]
    # The check's stack-wide count, in the stack's namespace with the service dimension only
    assert metric in {m.value for m in Metric}
    assert properties["Namespace"] == {"Fn::Sub": "apilake-${Stage}"}
    assert properties["MetricName"] == metric
    assert properties["Dimensions"] == [{"Name": "service", "Value": "apilake"}]
    assert (properties["Statistic"], properties["Threshold"], properties["ComparisonOperator"]) == (
        "Maximum",
        0,
        "GreaterThanThreshold",
    )
    # Over the check's interval, so that each period holds one check's counts
    assert properties["Period"] == CHECK_PERIOD and properties["EvaluationPeriods"] == 1
    # And a period without a check's counts (a check late, failing or not invoked: the alarms below say so) keeps
    # the alarm's state: not OK, not INSUFFICIENT_DATA, and no second e-mail when the next check says it again
    assert properties["TreatMissingData"] == "ignore"


def test_the_completeness_alarms_period_is_the_check_interval_for_every_allowed_interval(
    template: dict[str, Any],
) -> None:
    # Given the intervals the stack accepts, and the mapping of each to a period (CloudFormation cannot multiply)
    parameter = template["Parameters"]["CompletenessCheckMinutes"]
    periods = {minutes: row["PeriodSeconds"] for minutes, row in template["Mappings"]["CompletenessCheck"].items()}
    # Then every interval, the default among them, has its period, and the mapping no other
    assert set(periods) == {str(minutes) for minutes in parameter["AllowedValues"]}
    assert parameter["Default"] in parameter["AllowedValues"]
    # And each period is the interval in seconds, within what CloudWatch takes for one period (a day)
    for minutes, seconds in periods.items():
        assert seconds == 60 * int(minutes) <= 86_400, minutes


def test_a_failing_completeness_check_alarms(resources: dict[str, Any]) -> None:
    properties = resources["CompletenessErrorsAlarm"]["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == ("AWS/Lambda", "Errors")
    assert properties["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "Completeness"}}]
    # Over the check's interval: a check that fails every time keeps it in ALARM, not ALARM and OK by turns
    assert properties["Period"] == CHECK_PERIOD and properties["TreatMissingData"] == "notBreaching"
    dlq = resources["CompletenessScheduleDlqAlarm"]["Properties"]
    assert dlq["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["CompletenessScheduleDeadLetterQueue", "QueueName"]}


def test_every_metric_alarm_tells_the_topic_and_composite_alarms_tell_nobody(resources: dict[str, Any]) -> None:
    for name, alarm in by_type(resources, "AWS::CloudWatch::Alarm").items():
        assert alarm["Properties"]["AlarmActions"] == TOPIC and alarm["Properties"]["OKActions"] == TOPIC, name
    # The composites only gather alarms that already notify: a second message for each would be noise
    for name, alarm in by_type(resources, "AWS::CloudWatch::CompositeAlarm").items():
        assert not {"AlarmActions", "OKActions", "InsufficientDataActions"} & set(alarm["Properties"]), name


# ── the alarms on the dashboard ──


def _named(rule: str) -> list[str]:
    assert re.fullmatch(r'ALARM\("\$\{\w+\}"\)( OR ALARM\("\$\{\w+\}"\))*', rule), rule
    return re.findall(r'ALARM\("\$\{(\w+)\}"\)', rule)


def rule_names(alarm: dict[str, Any]) -> list[str]:
    """The alarms a composite alarm's rule names (``ALARM("${Logical}") OR ...``), in order; for a source with
    columns, the rule with AlarmOnSchemaDrift on (its schema-drift alarm last, the rule without it otherwise)."""
    rule = alarm["Properties"]["AlarmRule"]
    if "Fn::If" in rule:
        condition, drift_on, drift_off = rule["Fn::If"]
        on, off = _named(drift_on["Fn::Sub"]), _named(drift_off["Fn::Sub"])
        assert condition == "AlarmsOnSchemaDrift" and on[:-1] == off and on[-1].endswith("SchemaDriftAlarm"), rule
        return on
    return _named(rule["Fn::Sub"])


def test_each_source_has_one_alarm_over_all_of_its_own(
    resources: dict[str, Any], sources: SourcesFile, source: str
) -> None:
    composite = resources[logical_id(source, "SourceAlarm")]
    own = [name for name in by_type(resources, "AWS::CloudWatch::Alarm") if name.startswith(logical_id(source, ""))]
    declared = next(s for s in sources.sources if s.name == source).columns is not None
    assert len(own) == 5 + declared and rule_names(composite) == own  # + the schema-drift alarm with columns
    assert composite["Properties"]["AlarmName"] == {"Fn::Sub": f"apilake-${{Stage}}-source-{source}"}


def test_the_dashboard_shows_every_alarm_directly_or_through_the_sources_alarm(
    resources: dict[str, Any], sources: SourcesFile, board: dict[str, Any]
) -> None:
    assert rule_names(resources["SourcesAlarm"]) == [logical_id(s.name, "SourceAlarm") for s in sources.sources]
    in_sources = {name for s in sources.sources for name in rule_names(resources[logical_id(s.name, "SourceAlarm")])}
    stack_level = set(by_type(resources, "AWS::CloudWatch::Alarm")) - in_sources
    [widget] = [w for w in board["widgets"] if w["type"] == "alarm"]
    shown = {arn.rsplit(":", 1)[-1] for arn in widget["properties"]["alarms"]}
    assert shown == stack_level | {"SourcesAlarm"}
    assert {"RunIncompleteAlarm", "RunLandedNothingAlarm", "CurationFailedAlarm", "CompletenessErrorsAlarm"} <= shown


def test_sources_too_many_for_one_alarm_rule_are_refused() -> None:
    # Given more sources, with the longest names (38 characters), than a composite alarm's rule can name
    names = [f"{'s' * 36}{i:02d}" for i in range(ALARM_RULE_MAX_CHARS // 60)]
    # Then the generator says so, with the count and the limit
    with pytest.raises(ConfigError, match=rf"^{len(names)} sources .* over CloudWatch's {ALARM_RULE_MAX_CHARS}"):
        check_sources_alarm_rule(names)
    # And as many with short names fit
    check_sources_alarm_rule([f"s{i}" for i in range(len(names))])


# ── the dashboard ──


def substitute(text: str, resources: dict[str, Any], parameters: dict[str, Any]) -> str:
    """``Fn::Sub`` of the dashboard body as CloudFormation would do it, with made-up ARNs; an unknown name fails."""

    def value(match: re.Match[str]) -> str:
        name, _, attribute = match.group(1).partition(".")
        if name in PSEUDO:
            return PSEUDO[name]
        if name in parameters:
            return str(parameters[name]["Default"])
        assert name in resources and attribute in ("", "Arn"), match.group(0)
        return f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}" if attribute else name

    return re.sub(r"\$\{([^}!]+)\}", value, text)


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    """The dashboard's body as CloudFormation would make it (``Fn::Sub`` done, made-up ARNs), parsed."""
    template = parse_template((ROOT / "template.yaml").read_text())
    sub = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed: dict[str, Any] = json.loads(substitute(sub, template["Resources"], template["Parameters"]))
    return parsed


def searched(widget: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric name, statistic) of each line of a metric widget."""
    found = []
    for line in widget["properties"]["metrics"]:
        if isinstance(line[0], dict):
            match = re.search(r"MetricName=\"(\w+)\".*?', '(\w+)'", line[0]["expression"])
            assert match, line
            found.append((match.group(1), match.group(2)))
        else:
            found.append((line[1], widget["properties"]["stat"]))
    return found


def test_the_dashboard_is_laid_out_in_full_rows_that_do_not_overlap(board: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for widget in board["widgets"]:
        x, y, width, height = (widget[k] for k in ("x", "y", "width", "height"))
        assert x + width <= 24, widget
        taken = {(col, row) for col in range(x, x + width) for row in range(y, y + height)}
        assert not taken & cells, f"overlaps: {widget}"
        cells |= taken
    rows = {row for _, row in cells}
    assert rows == set(range(max(rows) + 1)) and len(cells) == 24 * len(rows), "a hole in the grid"


def metric_lines(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [line for widget in board["widgets"] if widget["type"] == "metric" for line in searched(widget)]


# `apilake ingest`'s stack-wide counts are the container stack's (container/fargate.yaml, deployed or not): its alarms
# watch them, and a main stack run by its Lambdas alone never has them, so its dashboard does not show them.
CONTAINER_METRICS = {Metric.INGEST_PAGES_LANDED, Metric.INGEST_PAGES_FAILED}
DASHBOARD_METRICS = [metric for metric in Metric if metric not in CONTAINER_METRICS]


@pytest.mark.parametrize("metric", DASHBOARD_METRICS, ids=[m.value for m in DASHBOARD_METRICS])
def test_every_metric_we_emit_is_on_the_dashboard(board: dict[str, Any], metric: Metric) -> None:
    assert metric.value in {name for name, _ in metric_lines(board)}


@pytest.mark.parametrize("metric", sorted(CONTAINER_METRICS), ids=sorted(m.value for m in CONTAINER_METRICS))
def test_the_container_modes_metrics_are_watched_by_its_stacks_alarms(metric: Metric) -> None:
    container = parse_template((ROOT / "container" / "fargate.yaml").read_text())["Resources"]
    watched = {r["Properties"].get("MetricName") for r in container.values() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert metric.value in watched


@pytest.mark.parametrize(
    ("metric", "statistic"),
    [
        ("api_latency_ms", "p50"),
        ("api_latency_ms", "p99"),
        ("run_complete", "Minimum"),  # a source incomplete at any check of the period shows 0
        ("pages_missing", "Maximum"),
        ("records_landed", "Maximum"),  # each check says it again for the same run: never summed
        ("messages_enqueued_total", "Sum"),
        ("pages_unchanged_total", "Sum"),
    ],
)
def test_the_dashboard_aggregates_each_metric_as_it_means(board: dict[str, Any], metric: str, statistic: str) -> None:
    assert (metric, statistic) in metric_lines(board)


def test_per_source_graphs_search_our_namespace_by_source(board: dict[str, Any]) -> None:
    expressions = [
        line[0]["expression"]
        for widget in board["widgets"]
        if widget["type"] == "metric"
        for line in widget["properties"]["metrics"]
        if isinstance(line[0], dict)
    ]
    ours = [e for e in expressions if "apilake-dev" in e]
    assert ours and all(e.startswith('SEARCH(\'{"apilake-dev",service,source} MetricName=') for e in ours)


def test_the_latest_errors_come_from_every_function_log_group(board: dict[str, Any], resources: dict[str, Any]) -> None:
    [widget] = [w for w in board["widgets"] if w["type"] == "log"]
    properties = widget["properties"]
    [prefix] = properties["logGroupPrefixes"]["logGroupPrefix"]
    assert properties["queryBy"] == "logGroupPrefix" and prefix == "/apilake/dev/"
    assert properties["query"].startswith(f"SOURCE logGroups(namePrefix: ['{prefix}']) |")
    assert "sort @timestamp desc" in properties["query"] and "level in ['ERROR'" in properties["query"]
    # And every function's log group is under that prefix: the planner's, each worker's, the check's
    for name, function in by_type(resources, "AWS::Serverless::Function").items():
        group = resources[function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
        assert group["Properties"]["LogGroupName"]["Fn::Sub"].startswith("/apilake/${Stage}/"), name


def test_regenerating_for_other_sources_keeps_the_dashboard_and_gathers_their_alarms(tmp_path: Path) -> None:
    # Given a copy of the template, and a sources file with two sources of its own
    sources = write_sources(tmp_path / "sources.yaml", TWO_NEW_SOURCES)
    template = tmp_path / "template.yaml"
    template.write_text((ROOT / "template.yaml").read_text())
    # When the region is regenerated for them
    assert main(["--sources", str(sources), "--template", str(template)]) == 0
    # Then the dashboard is as it was, and SourcesAlarm gathers the new sources' alarms
    before, after = (parse_template(t.read_text())["Resources"] for t in (ROOT / "template.yaml", template))
    assert after["Dashboard"] == before["Dashboard"]
    assert rule_names(after["SourcesAlarm"]) == [logical_id(s["name"], "SourceAlarm") for s in TWO_NEW_SOURCES]
