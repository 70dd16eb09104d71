"""Issue 14 in template.yaml: each source with ``columns`` gets its lines and curated Glue tables (partition
projection on ``ingestion_date``) and, behind ``AlarmOnSchemaDrift``, a schema-drift alarm; the stack has an
analyst policy that queries the lake in its workgroup and does nothing else.

The region is generated here from a sources file of the test's own (every column type, one source without
columns), so that these hold whatever the project's sources file declares.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from apilake.config import SourcesFile, load_sources
from apilake.curated import RUN_SUMMARY_TABLE, curated_prefix
from apilake.lake import source_prefix
from apilake.names import logical_id
from apilake.run_summary import SUMMARY_PREFIX, SourceSummary, glue_columns, summary_key
from apilake_dev import paths
from apilake_dev.template.catalog import curated_source_prefix
from apilake_dev.template.generate import main, parse_template
from tests.template.test_generate import TWO_NEW_SOURCES, write_sources
from tests.template.test_tools import BIN, CFN_LINT, CHECKOV, run, translated_template

# Every declared type and the Glue type Athena reads it as (json: the JSON text)
GLUE_TYPE = {
    "string": "string",
    "bigint": "bigint",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "date": "date",
    "json": "string",
}
COLUMNS = {"id": "bigint", "Customer": "string", "amount": "double", "paid": "boolean", "issuedAt": "timestamp"}
COLUMNS |= {"due": "date", "lines": "json"}
WITH_COLUMNS = {**TWO_NEW_SOURCES[0], "record_id_path": "id", "columns": COLUMNS}
WITHOUT_COLUMNS = TWO_NEW_SOURCES[1]
PROJECTION = {
    "projection.enabled": "true",
    "projection.ingestion_date.type": "date",
    "projection.ingestion_date.format": "yyyy-MM-dd",
    "projection.ingestion_date.range": "2020-01-01,NOW",
    "projection.ingestion_date.interval": "1",
    "projection.ingestion_date.interval.unit": "DAYS",
}
CONDITION = "AlarmsOnSchemaDrift"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SourcesFile]:
    """template.yaml with its region for a source with columns of every type and one without."""
    folder = tmp_path_factory.mktemp("catalog")
    sources = write_sources(folder / "sources.yaml", [WITH_COLUMNS, WITHOUT_COLUMNS])
    template = folder / "template.yaml"
    template.write_text(paths.TEMPLATE.read_text())
    assert main(["--sources", str(sources), "--template", str(template)]) == 0
    return template, load_sources(sources)


@pytest.fixture(scope="module")
def resources(generated: tuple[Path, SourcesFile]) -> dict[str, Any]:
    found: dict[str, Any] = parse_template(generated[0].read_text())["Resources"]
    return found


def table(resources: dict[str, Any], source: str, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = resources[logical_id(source, kind)]
    assert found["Type"] == "AWS::Glue::Table"
    assert found["Properties"]["DatabaseName"] == {"Ref": "GlueDatabase"}
    return found["Properties"]["TableInput"]  # type: ignore[no-any-return]


def test_every_declared_type_has_its_glue_type() -> None:
    from apilake.config import ColumnType

    assert set(GLUE_TYPE) == {t.value for t in ColumnType}
    assert set(COLUMNS.values()) == set(GLUE_TYPE)


def test_the_curated_table_has_the_declared_columns_lowercased_with_their_glue_types(
    resources: dict[str, Any],
) -> None:
    curated = table(resources, "billing-eu", "CuratedTable")
    assert curated["Name"] == "source_billing_eu_curated"
    columns = [(c["Name"], c["Type"]) for c in curated["StorageDescriptor"]["Columns"]]
    assert columns == [(field.lower(), GLUE_TYPE[kind]) for field, kind in COLUMNS.items()]
    assert curated["PartitionKeys"] == [{"Name": "ingestion_date", "Type": "date"}]
    serde = curated["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
    assert serde == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert curated["StorageDescriptor"]["InputFormat"].endswith("MapredParquetInputFormat")


def test_the_lines_table_is_each_raw_line_as_one_string(resources: dict[str, Any]) -> None:
    lines = table(resources, "billing-eu", "LinesTable")
    assert lines["Name"] == "source_billing_eu_lines"
    storage = lines["StorageDescriptor"]
    assert storage["Columns"] == [{"Name": "line", "Type": "string"}]
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    # LazySimpleSerDe's default field delimiter is \x01, which JSON text never holds unescaped: one field a line
    assert storage["SerdeInfo"] == {"SerializationLibrary": "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"}
    assert lines["PartitionKeys"] == [{"Name": "ingestion_date", "Type": "date"}]


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("LinesTable", source_prefix("billing-eu")), ("CuratedTable", curated_source_prefix("billing-eu"))],
)
def test_each_table_projects_one_partition_a_day_at_its_dates_folder(
    resources: dict[str, Any], kind: str, prefix: str
) -> None:
    found = table(resources, "billing-eu", kind)
    parameters = found["Parameters"]
    assert {k: v for k, v in parameters.items() if k.startswith("projection.")} == PROJECTION
    # Fn::Sub writes ${!ingestion_date} as ${ingestion_date}, the placeholder Athena fills in
    template = parameters["storage.location.template"]["Fn::Sub"]
    assert template == f"s3://${{LakeBucket}}/{prefix}ingestion_date=${{!ingestion_date}}/"
    assert found["StorageDescriptor"]["Location"] == {"Fn::Sub": f"s3://${{LakeBucket}}/{prefix}"}
    assert found["TableType"] == "EXTERNAL_TABLE"


def test_the_curated_location_is_where_the_curation_writes_a_date() -> None:
    day = "2026-03-01"
    assert curated_prefix("billing-eu", day) == f"{curated_source_prefix('billing-eu')}ingestion_date={day}/"
    assert source_prefix("billing-eu") == "raw/source=billing-eu/"


def test_a_source_without_columns_has_no_table_and_no_drift_alarm(resources: dict[str, Any]) -> None:
    for kind in ("LinesTable", "CuratedTable", "SchemaDriftAlarm"):
        assert logical_id("tickets", kind) not in resources
    assert set(resources[logical_id("tickets", "SourceAlarm")]["Properties"]["AlarmRule"]) == {"Fn::Sub"}


# ── the schema-drift alarm ──


def test_the_drift_alarm_is_off_by_default_and_on_with_the_parameter(generated: tuple[Path, SourcesFile]) -> None:
    template = parse_template(generated[0].read_text())
    parameter = template["Parameters"]["AlarmOnSchemaDrift"]
    assert parameter["Default"] == "false" and parameter["AllowedValues"] == ["true", "false"]
    assert template["Conditions"][CONDITION] == {"Fn::Equals": [{"Ref": "AlarmOnSchemaDrift"}, "true"]}
    alarm = template["Resources"][logical_id("billing-eu", "SchemaDriftAlarm")]
    assert alarm["Condition"] == CONDITION
    # And the stack says whether they are on (an output only then: the condition is used even without columns)
    assert template["Outputs"]["SchemaDriftAlarms"]["Condition"] == CONDITION


def test_the_drift_alarm_watches_the_checks_count_for_its_source(resources: dict[str, Any]) -> None:
    alarm = resources[logical_id("billing-eu", "SchemaDriftAlarm")]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ({"Fn::Sub": "apilake-${Stage}"}, "schema_drift_fields")
    assert alarm["Dimensions"] == [{"Name": "source", "Value": "billing-eu"}, {"Name": "service", "Value": "apilake"}]
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Maximum", 0)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    # One period per completeness check, a period without one keeps the state (as the run alarms, decision 33)
    assert alarm["Period"] == resources["RunIncompleteAlarm"]["Properties"]["Period"]
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}]


def deployed(resources: dict[str, Any], drift: bool) -> dict[str, Any]:
    """The resources CloudFormation creates with AlarmOnSchemaDrift ``drift``: conditional ones dropped and
    ``Fn::If`` on the condition resolved (the only condition the region's resources use besides the stack's)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Fn::If"} and value["Fn::If"][0] == CONDITION:
                return resolve(value["Fn::If"][1 if drift else 2])
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    kept = {n: r for n, r in resources.items() if r.get("Condition") != CONDITION or drift}
    return {n: resolve(r) for n, r in kept.items()}


@pytest.mark.parametrize("drift", [True, False], ids=["AlarmOnSchemaDrift=true", "AlarmOnSchemaDrift=false"])
def test_the_sources_composite_names_the_drift_alarm_only_when_it_exists(
    resources: dict[str, Any], drift: bool
) -> None:
    stack = deployed(resources, drift)
    for source in ("billing-eu", "tickets"):
        rule = stack[logical_id(source, "SourceAlarm")]["Properties"]["AlarmRule"]["Fn::Sub"]
        named = re.findall(r'ALARM\("\$\{(\w+)\}"\)', rule)
        assert all(name in stack for name in named), named
        alarms = [name for name, r in stack.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
        own = [name for name in alarms if name.startswith(logical_id(source, ""))]
        assert named == own
        assert (logical_id(source, "SchemaDriftAlarm") in named) == (drift and source == "billing-eu")
    # And the dashboard shows it through SourcesAlarm, which names every source's composite
    assert "BillingEuSourceAlarm" in stack["SourcesAlarm"]["Properties"]["AlarmRule"]["Fn::Sub"]


def test_the_dashboard_graphs_schema_drift_per_source() -> None:
    body = parse_template(paths.TEMPLATE.read_text())["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    assert "MetricName=\\\"schema_drift_fields\\\"', 'Maximum'" in body["Fn::Sub"]


# ── the analyst policy (hand-written part: the project's template.yaml) ──


@pytest.fixture(scope="module")
def analyst() -> dict[str, dict[str, Any]]:
    template = parse_template(paths.TEMPLATE.read_text())
    policy = template["Resources"]["AnalystPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert template["Outputs"]["AnalystPolicyArn"]["Value"] == {"Ref": "AnalystPolicy"}
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    return {s["Sid"]: s for s in statements}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def sub(value: Any) -> str:
    """A resource as text: ``!Sub`` as written, ``!GetAtt X.Arn`` as ``${X.Arn}``."""
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return str(value["Fn::Sub"])


def arn(service: str, what: str) -> str:
    return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{what}"


@pytest.mark.parametrize(
    ("sid", "actions", "resources"),
    [
        (
            "QueryInTheWorkGroup",
            [
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
                "athena:GetWorkGroup",
                # the console's query editor: its history and saved queries, in the workgroup
                "athena:ListQueryExecutions",
                "athena:BatchGetQueryExecution",
                "athena:GetQueryRuntimeStatistics",
                "athena:ListNamedQueries",
                "athena:GetNamedQuery",
                "athena:BatchGetNamedQuery",
            ],
            [arn("athena", "workgroup/${AthenaWorkGroup}")],
        ),
        (
            "BrowseTheDataCatalog",
            ["athena:ListDatabases", "athena:ListTableMetadata", "athena:GetTableMetadata"],
            [arn("athena", "datacatalog/AwsDataCatalog")],
        ),
        (
            "ReadTheCatalog",
            [
                "glue:GetDatabase",
                "glue:GetTable",
                "glue:GetTables",
                "glue:GetPartition",
                "glue:GetPartitions",
                "glue:BatchGetPartition",
            ],
            [
                arn("glue", "catalog"),
                arn("glue", "database/${GlueDatabase}"),
                arn("glue", "table/${GlueDatabase}/*"),
            ],
        ),
        ("ReadRawAndCurated", ["s3:GetObject"], ["${LakeBucket.Arn}/raw/*", "${LakeBucket.Arn}/curated/*"]),
        ("ListRawAndCurated", ["s3:ListBucket"], ["${LakeBucket.Arn}"]),
        ("ReadRunSummaries", ["s3:GetObject"], [f"${{LakeBucket.Arn}}/{SUMMARY_PREFIX}*"]),
        ("ListRunSummaries", ["s3:ListBucket"], ["${LakeBucket.Arn}"]),
        (
            "ReadAndWriteQueryResults",
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            ["${AthenaResultsBucket.Arn}/results/*"],
        ),
        ("ListQueryResults", ["s3:ListBucket"], ["${AthenaResultsBucket.Arn}"]),
        ("LocateTheBuckets", ["s3:GetBucketLocation"], ["${LakeBucket.Arn}", "${AthenaResultsBucket.Arn}"]),
        ("UseLakeKeyThroughS3AndAthena", ["kms:Decrypt", "kms:GenerateDataKey"], ["${LakeKey.Arn}"]),
    ],
)
def test_the_analyst_policy_grants_exactly(
    analyst: dict[str, dict[str, Any]], sid: str, actions: list[str], resources: list[str]
) -> None:
    statement = analyst[sid]
    assert sorted(as_list(statement["Action"])) == sorted(actions)
    assert [sub(r) for r in as_list(statement["Resource"])] == resources


def test_the_analyst_policy_has_nothing_else(analyst: dict[str, dict[str, Any]]) -> None:
    assert len(analyst) == 12
    for sid, statement in analyst.items():
        assert "*" not in as_list(statement["Action"]), statement
        assert not any(action.endswith("*") for action in as_list(statement["Action"])), statement
        # Only the two list actions that IAM scopes to no resource are granted on every resource
        if sid == "ListWorkGroupsAndCatalogs":
            assert (as_list(statement["Action"]), statement["Resource"]) == (
                ["athena:ListWorkGroups", "athena:ListDataCatalogs"],
                "*",
            )
        else:
            assert "*" not in as_list(statement["Resource"]), statement


def test_analysts_write_only_query_results(analyst: dict[str, dict[str, Any]]) -> None:
    writes: tuple[str, ...] = ("s3:Put", "s3:Delete", "s3:Abort", "s3:Restore", "s3:Replicate")
    writes += ("glue:Create", "glue:Update", "glue:Delete", "glue:BatchCreate", "glue:BatchUpdate", "glue:BatchDelete")
    writes += ("athena:Create", "athena:Update", "athena:Delete", "athena:Tag")
    for statement in analyst.values():
        if any(a.startswith(writes) for a in as_list(statement["Action"])):
            assert [sub(r) for r in as_list(statement["Resource"])] == ["${AthenaResultsBucket.Arn}/results/*"]


@pytest.mark.parametrize(
    ("sid", "prefixes"),
    [
        ("ListRawAndCurated", ["raw/*", "curated/*"]),
        ("ListRunSummaries", [f"{SUMMARY_PREFIX}*"]),
        ("ListQueryResults", ["results/*"]),
    ],
)
def test_analysts_list_only_their_prefixes(analyst: dict[str, dict[str, Any]], sid: str, prefixes: list[str]) -> None:
    assert analyst[sid]["Condition"] == {"StringLike": {"s3:prefix": prefixes}}


def test_analysts_use_the_key_only_through_s3_and_athena(analyst: dict[str, dict[str, Any]]) -> None:
    via = analyst["UseLakeKeyThroughS3AndAthena"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert [v["Fn::Sub"] for v in via] == ["s3.${AWS::Region}.amazonaws.com", "athena.${AWS::Region}.amazonaws.com"]


def test_the_query_results_prefix_is_the_workgroups_enforced_output() -> None:
    resources = parse_template(paths.TEMPLATE.read_text())["Resources"]
    configuration = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True
    output = configuration["ResultConfiguration"]["OutputLocation"]["Fn::Sub"]
    assert output == "s3://${AthenaResultsBucket}/results/"


# ── every run's summary: the table run_summary (the view apilake_runs is the curated step's) ──


def test_the_run_summary_table_reads_the_summaries_with_the_models_columns() -> None:
    resources = parse_template(paths.TEMPLATE.read_text())["Resources"]
    found = resources["RunSummaryTable"]
    assert found["Type"] == "AWS::Glue::Table"
    assert found["Properties"]["DatabaseName"] == {"Ref": "GlueDatabase"}
    table = found["Properties"]["TableInput"]
    assert (table["Name"], table["TableType"]) == (RUN_SUMMARY_TABLE, "EXTERNAL_TABLE")
    assert "PartitionKeys" not in table
    storage = table["StorageDescriptor"]
    # Where the report's writer puts each run's NDJSON, read by the OpenX JSON SerDe
    assert storage["Location"] == {"Fn::Sub": f"s3://${{LakeBucket}}/{SUMMARY_PREFIX}"}
    assert summary_key("r1").startswith(SUMMARY_PREFIX) and "/" not in summary_key("r1").removeprefix(SUMMARY_PREFIX)
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    # And its columns are the summary's fields, in order, with their Glue types
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == glue_columns()
    assert [c["Name"] for c in storage["Columns"]] == list(SourceSummary.model_fields)


def test_the_completeness_check_may_put_the_run_summaries() -> None:
    # (the check stores each report with its summary: apilake.report.store_report)
    resources = parse_template(paths.TEMPLATE.read_text())["Resources"]
    statements = [
        s for p in resources["CompletenessRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    [write] = [s for s in statements if s.get("Sid") == "WriteRunReports"]
    assert write["Action"] == "s3:PutObject"
    assert {"Fn::Sub": f"${{LakeBucket.Arn}}/{SUMMARY_PREFIX}run=*.json"} in write["Resource"]
    assert re.fullmatch(r"ledger/summary/run=[^/]*\.json", summary_key("sched-20261126T010000Z"))


# ── the tools, on the generated template with each value of AlarmOnSchemaDrift ──


def with_drift_default(source: Path, target: Path, value: str) -> Path:
    text = source.read_text()
    start = text.index("Default:", text.index("\n  AlarmOnSchemaDrift:\n"))
    target.write_text(text[:start] + f"Default: '{value}'" + text[text.index("\n", start) :])
    return target


@pytest.mark.slow
@pytest.mark.parametrize("value", ["true", "false"])
def test_the_tools_take_the_tables_and_the_drift_alarm(
    generated: tuple[Path, SourcesFile], tmp_path: Path, value: str
) -> None:
    template = with_drift_default(generated[0], tmp_path / "template.yaml", value)
    assert parse_template(template.read_text())["Parameters"]["AlarmOnSchemaDrift"]["Default"] == value
    result = run(BIN / "sam", "validate", "--lint", "--template", template)
    assert result.returncode == 0, result.stdout + result.stderr
    translated = tmp_path / "translated.json"
    translated.write_text(json.dumps(translated_template(template)))
    for linted in (template, translated):
        result = run(CFN_LINT, linted)
        assert result.returncode == 0, f"{linted.name}: {result.stdout}{result.stderr}"
    scan = run(CHECKOV, "-f", template, "--framework", "cloudformation", "--skip-download", "--output", "json")
    report = json.loads(scan.stdout)
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["parsing_errors"] == 0
