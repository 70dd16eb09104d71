"""What matters in template.yaml, asserted for every source: queues, DLQs, concurrency, encryption, IAM."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apilake.config import SourcesFile
from apilake.names import pascal, queue_name, table_name
from apilake.pagination import paginator_for
from apilake_dev.sql import create_current_view, current_view_name
from apilake_dev.template.generate import main, secret_arn
from tests.template.conftest import ROOT


def by_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """A role's statements, those under a condition (``Fn::If [c, statement, AWS::NoValue]``) included."""
    found = [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    return [s["Fn::If"][1] if "Fn::If" in s else s for s in found]


def test_the_template_region_is_current_with_the_sources_file() -> None:
    assert main(["--check"]) == 0, "run `make template`"


def test_no_yaml_anchors_or_aliases_in_the_template() -> None:
    text = (ROOT / "template.yaml").read_text()
    assert not [line for line in text.splitlines() if "&id0" in line or "*id0" in line]


class TestEverySource:
    def test_queue_has_an_encrypted_dlq_with_enough_receives_and_longer_retention(
        self, resources: dict[str, Any], source: str
    ) -> None:
        queue = resources[f"{pascal(source)}Queue"]["Properties"]
        dlq = resources[f"{pascal(source)}DeadLetterQueue"]["Properties"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [f"{pascal(source)}DeadLetterQueue", "Arn"]
        }
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
        assert queue["KmsMasterKeyId"] == {"Ref": "LakeKey"} and dlq["KmsMasterKeyId"] == {"Ref": "LakeKey"}

    def test_visibility_timeout_is_at_least_six_times_the_worker_timeout(
        self, resources: dict[str, Any], source: str
    ) -> None:
        worker = resources[f"{pascal(source)}Worker"]["Properties"]
        assert resources[f"{pascal(source)}Queue"]["Properties"]["VisibilityTimeout"] >= 6 * worker["Timeout"]

    def test_event_source_reports_item_failures_and_caps_concurrency(
        self, resources: dict[str, Any], sources: SourcesFile, source: str
    ) -> None:
        worker = resources[f"{pascal(source)}Worker"]["Properties"]
        event = worker["Events"]["Pages"]["Properties"]
        maximum = event["ScalingConfig"]["MaximumConcurrency"]
        assert worker["Events"]["Pages"]["Type"] == "SQS"
        assert event["Queue"] == {"Fn::GetAtt": [f"{pascal(source)}Queue", "Arn"]}
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        configured = sources.get(source).worker
        assert event["BatchSize"] == (configured.batch_size or {"Ref": "WorkerBatchSize"})
        assert worker["MemorySize"] == (configured.memory_mb or {"Ref": "WorkerMemorySize"})
        assert worker["Timeout"] == configured.timeout_seconds
        assert maximum >= 2
        # And the worker reserves as much, unless the stack is deployed with ReservedConcurrency=false
        assert worker["ReservedConcurrentExecutions"] == {
            "Fn::If": ["ReserveConcurrency", maximum, {"Ref": "AWS::NoValue"}]
        }
        assert maximum == sources.get(source).budget.max_concurrency
        assert worker["Environment"]["Variables"]["APILAKE_SOURCE"] == source

    def test_alarms_watch_its_dlq_and_the_age_of_its_oldest_message(
        self, resources: dict[str, Any], source: str
    ) -> None:
        alarms = by_type(resources, "AWS::CloudWatch::Alarm")
        watched = {(a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"])) for a in alarms.values()}
        dlq_dimension = [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{pascal(source)}DeadLetterQueue", "QueueName"]}}
        ]
        queue_dimension = [{"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{pascal(source)}Queue", "QueueName"]}}]
        assert ("ApproximateNumberOfMessagesVisible", json.dumps(dlq_dimension)) in watched
        assert ("ApproximateAgeOfOldestMessage", json.dumps(queue_dimension)) in watched
        dlq_alarm = resources[f"{pascal(source)}DlqDepthAlarm"]["Properties"]
        assert dlq_alarm["Threshold"] == 0 and dlq_alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert dlq_alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]

    def test_the_worker_writes_only_under_its_own_source_prefixes(self, resources: dict[str, Any], source: str) -> None:
        role = resources[f"{pascal(source)}WorkerRole"]
        s3_write = [s for s in statements(role) if any(a in ("s3:PutObject", "s3:DeleteObject") for a in _actions(s))]
        resources_written = [json.dumps(r) for s in s3_write for r in _as_list(s["Resource"])]
        assert resources_written, "the worker must be able to write its pages"
        for written in resources_written:
            assert f"raw/source={source}/" in written or f"ledger/source={source}/" in written, written

    def test_the_worker_uses_only_its_own_queue(self, resources: dict[str, Any], source: str) -> None:
        role = resources[f"{pascal(source)}WorkerRole"]
        sqs = [s for s in statements(role) if any(a.startswith("sqs:") for a in _actions(s))]
        assert {json.dumps(s["Resource"]) for s in sqs} == {
            json.dumps({"Fn::GetAtt": [f"{pascal(source)}Queue", "Arn"]})
        }


def _actions(statement: dict[str, Any]) -> list[str]:
    return _as_list(statement["Action"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_iam_statement_grants_s3_sqs_or_secrets_manager_on_star(resources: dict[str, Any]) -> None:
    for name, role in by_type(resources, "AWS::IAM::Role").items():
        for statement in statements(role):
            if any(a.split(":")[0] in ("s3", "sqs", "secretsmanager") for a in _actions(statement)):
                assert "*" not in _as_list(statement["Resource"]), f"{name}: {statement}"
            assert "*" not in _actions(statement), f"{name}: {statement}"


def test_the_planner_may_only_send_to_the_queues_and_write_manifests(
    resources: dict[str, Any], sources: SourcesFile
) -> None:
    own = {a for s in statements(resources["PlannerRole"]) for a in _actions(s) if not a.startswith("ec2:")}
    assert own == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:PutObject",
        "sqs:SendMessage",  # to its own on-failure destination
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "s3:GetObject",  # the ledger, to settle incremental marks
        "s3:ListBucket",
        "s3:DeleteObject",
    }
    by_sid = {s["Sid"]: s for s in statements(resources["PlannerRole"]) if "Sid" in s}
    assert by_sid["WriteRunManifests"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/ledger/runs/*"}
    # And its marks' writes are kept to ledger/source=*/state/, its reads and listings to ledger/
    assert by_sid["KeepIncrementalMarks"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/ledger/source=*/state/*"}
    assert by_sid["ReadLedger"]["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/ledger/*"}
    assert by_sid["ListLedger"]["Condition"] == {"StringLike": {"s3:prefix": ["ledger/*"]}}
    # And the region's policy gives it each source's queue, and the secrets of the sources it probes only
    policy = resources["PlannerSourcesPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "PlannerRole"}]
    granted = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(_actions(granted["FanOutToSourceQueues"])) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    assert granted["FanOutToSourceQueues"]["Resource"] == [
        {"Fn::GetAtt": [f"{pascal(s.name)}Queue", "Arn"]} for s in sources.sources
    ]
    probed = [{"Fn::Sub": arn} for s in sources.sources if paginator_for(s).needs_probe and (arn := secret_arn(s))]
    assert granted.get("ProbeWithSourceSecrets", {}).get("Resource", []) == probed


def test_queues_are_named_as_the_planner_looks_them_up(resources: dict[str, Any], source: str) -> None:
    queue = resources[f"{pascal(source)}Queue"]["Properties"]
    assert queue["QueueName"] == {"Fn::Sub": queue_name("${Stage}", source)}


@pytest.mark.parametrize("bucket", ["LakeBucket", "AthenaResultsBucket", "AccessLogsBucket"])
def test_buckets_are_encrypted_private_and_tls_only(resources: dict[str, Any], bucket: str) -> None:
    properties = resources[bucket]["Properties"]
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("aws:kms", "AES256")
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    policy = next(
        r for r in by_type(resources, "AWS::S3::BucketPolicy").values() if r["Properties"]["Bucket"] == {"Ref": bucket}
    )
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Effect") == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_lake_uses_sse_kms_with_a_bucket_key_and_a_rotating_key(resources: dict[str, Any]) -> None:
    encryption = resources["LakeBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["LakeKey", "Arn"]},
    }
    assert encryption["BucketKeyEnabled"] is True
    assert resources["LakeKey"]["Properties"]["EnableKeyRotation"] is True


def test_the_planner_runs_from_a_scheduler_with_retries_and_a_dlq(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    event = resources["Planner"]["Properties"]["Events"]["Nightly"]
    assert event["Type"] == "ScheduleV2"
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 1 * * ? *)"
    assert event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert event["Properties"]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["PlannerScheduleDeadLetterQueue", "Arn"]}}
    scheduled = json.loads(event["Properties"]["Input"])
    assert scheduled["source"] == "aws.scheduler" and scheduled["time"] == "<aws.scheduler.scheduled-time>"


def test_the_scheduler_input_matches_the_planner_event_fixture(resources: dict[str, Any]) -> None:
    scheduled = json.loads(resources["Planner"]["Properties"]["Events"]["Nightly"]["Properties"]["Input"])
    fixture = json.loads((ROOT / "events" / "planner.json").read_text())
    assert set(scheduled) <= set(fixture)
    assert scheduled["source"] == fixture["source"]


def test_the_sources_own_schedules_are_the_sources_files(resources: dict[str, Any], sources: SourcesFile) -> None:
    # One schedule per distinct expression and zone; its event names its sources; the others follow the Nightly
    expected = {
        (s.schedule.expression, s.schedule.timezone): [o.name for o in sources.sources if o.schedule == s.schedule]
        for s in sources.sources
        if s.schedule is not None
    }
    found = {
        (r["Properties"]["ScheduleExpression"], r["Properties"]["ScheduleExpressionTimezone"]): json.loads(
            r["Properties"]["Target"]["Input"]
        )["detail"]["sources"]
        for r in by_type(resources, "AWS::Scheduler::Schedule").values()
    }
    assert found == expected


def test_the_scheduler_role_may_invoke_the_planner_and_dead_letter_only(resources: dict[str, Any]) -> None:
    # Every schedule (the Nightly and the sources' own) uses this role: it invokes the planner, or dead-letters
    allowed = {json.dumps(s["Action"]): s["Resource"] for s in statements(resources["PlannerSchedulerRole"])}
    assert allowed['"lambda:InvokeFunction"'] == {"Fn::GetAtt": ["Planner", "Arn"]}
    assert allowed['"sqs:SendMessage"'] == {"Fn::GetAtt": ["PlannerScheduleDeadLetterQueue", "Arn"]}
    targets = [r["Properties"]["Target"] for r in by_type(resources, "AWS::Scheduler::Schedule").values()]
    nightly = resources["Planner"]["Properties"]["Events"]["Nightly"]["Properties"]
    for target in [*targets, nightly]:
        assert target["RoleArn"] == {"Fn::GetAtt": ["PlannerSchedulerRole", "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["PlannerScheduleDeadLetterQueue", "Arn"]}}
    assert all(target["Arn"] == {"Fn::GetAtt": ["Planner", "Arn"]} for target in targets)


def test_the_crawler_makes_one_table_per_source_after_the_batch(resources: dict[str, Any]) -> None:
    crawler = resources["RawCrawler"]["Properties"]
    assert crawler["Targets"]["S3Targets"] == [{"Path": {"Fn::Sub": "s3://${LakeBucket}/raw/"}}]
    configuration = json.loads(crawler["Configuration"])
    assert configuration["Grouping"] == {
        "TableGroupingPolicy": "CombineCompatibleSchemas",
        "TableLevelConfiguration": 3,
    }
    assert crawler["CrawlerSecurityConfiguration"] == {"Ref": "GlueSecurityConfiguration"}
    assert crawler["Schedule"] == {"ScheduleExpression": {"Ref": "CrawlerSchedule"}}


def test_athena_enforces_encrypted_results_and_a_scan_cutoff(resources: dict[str, Any]) -> None:
    configuration = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["PublishCloudWatchMetricsEnabled"] is True
    assert configuration["BytesScannedCutoffPerQuery"] == {"Ref": "AthenaBytesScannedCutoff"}
    assert configuration["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"


def test_athena_runs_the_engine_the_sql_is_written_for(resources: dict[str, Any]) -> None:
    # The curated SQL (UNLOAD, "$file_modified_time", TRY_CAST) is Athena engine version 3's (Trino)
    configuration = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert configuration["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}


@pytest.mark.parametrize(
    ("rule", "prefix", "expires_after_days", "noncurrent_after_days"),
    [
        ("ExpireNoncurrentVersions", None, None, 30),
        # what a failed or interrupted curation leaves in its staging prefix
        ("ExpireCurationStaging", "curated-staging/", 2, 1),
        # a date's Parquet replaced by a later curation
        ("ExpireReplacedCurated", "curated/", None, 3),
    ],
)
def test_the_lake_expires_what_is_no_longer_read(
    resources: dict[str, Any],
    rule: str,
    prefix: str | None,
    expires_after_days: int | None,
    noncurrent_after_days: int,
) -> None:
    rules = {r["Id"]: r for r in resources["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    found = rules[rule]
    assert found["Status"] == "Enabled"
    assert found.get("Prefix") == prefix
    assert found.get("ExpirationInDays") == expires_after_days
    assert found["NoncurrentVersionExpiration"] == {"NoncurrentDays": noncurrent_after_days}


def test_the_lake_removes_delete_markers_left_alone(resources: dict[str, Any]) -> None:
    rules = {r["Id"]: r for r in resources["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    # Each staging object deleted after its copy leaves a marker: gone once its versions expire
    assert rules["ExpireNoncurrentVersions"]["ExpiredObjectDeleteMarker"] is True
    assert "Prefix" not in rules["ExpireNoncurrentVersions"]


def test_crawler_failures_and_planner_errors_alarm(resources: dict[str, Any]) -> None:
    rule = resources["CrawlerFailedRule"]["Properties"]
    assert rule["EventPattern"]["detail"]["state"] == ["Failed"]
    assert rule["Targets"][0]["Arn"] == {"Ref": "AlarmTopic"}
    assert resources["PlannerErrorsAlarm"]["Properties"]["MetricName"] == "Errors"
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "LakeKey"}


def test_every_function_logs_to_its_own_log_group_with_retention_and_encryption(resources: dict[str, Any]) -> None:
    groups = by_type(resources, "AWS::Logs::LogGroup")
    functions = by_type(resources, "AWS::Serverless::Function")
    used = [f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in functions.values()]
    assert sorted(used) == sorted(groups), "one log group per function, each used by one"
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["LakeKey", "Arn"]}


def test_functions_are_arm64_python312_with_the_common_layer(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.12" and function_globals["Architectures"] == ["arm64"]
    assert function_globals["Layers"] == [{"Ref": "CommonLayer"}]
    # built by layers/common/Makefile (the python3.12 builder's work plus bytecode), for arm64
    assert resources["CommonLayer"]["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert resources["CommonLayer"]["Properties"]["CompatibleRuntimes"] == ["python3.12"]


def test_outputs_tell_the_operator_commands_where_everything_is(template: dict[str, Any]) -> None:
    # The names `apilake` resolves from the stack's outputs (the contract with the operator commands)
    outputs = {name: output["Value"] for name, output in template["Outputs"].items()}
    assert outputs["PlannerFunctionName"] == {"Ref": "Planner"}
    assert outputs["CompletenessFunctionName"] == {"Ref": "Completeness"}
    assert outputs["StageName"] == {"Ref": "Stage"}
    assert outputs["LakeBucketName"] == {"Ref": "LakeBucket"}
    assert outputs["PlannerFailureQueueUrl"] == {"Ref": "PlannerFailureQueue"}
    assert outputs["AlarmTopicArn"] == {"Ref": "AlarmTopic"}
    assert outputs["LakeKeyArn"] == {"Fn::GetAtt": ["LakeKey", "Arn"]}  # the container stack's parameter
    assert {"GlueDatabaseName", "RawCrawlerName", "AthenaWorkGroupName", "DashboardUrl"} <= set(outputs)


def test_every_checkov_skip_carries_a_reason(resources: dict[str, Any]) -> None:
    for name, resource in resources.items():
        for check in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert check["id"].startswith("CKV_") and len(check["comment"]) > 20, name


def test_every_source_with_a_record_id_has_its_current_view_query_in_athena_sql(
    resources: dict[str, Any], sources: SourcesFile, source: str
) -> None:
    import sqlglot  # here: the other template tests need no SQL parser
    from sqlglot import exp

    from apilake import curated

    config = next(s for s in sources.sources if s.name == source)
    named = resources.get(f"{pascal(source)}CurrentViewQuery")
    # With columns the view is over the curated table (apilake.curated), without over the crawler's raw table
    expected = create_current_view(config) if config.columns is None else curated.create_current_view(config)
    if expected is None:
        assert named is None, "no record id, no latest version: no view"
        return
    assert named is not None and named["Type"] == "AWS::Athena::NamedQuery"
    query = named["Properties"]
    assert query["Name"] == {"Fn::Sub": f"apilake-${{Stage}}-{source}-current"}
    assert query["Database"] == {"Ref": "GlueDatabase"} and query["WorkGroup"] == {"Ref": "AthenaWorkGroup"}
    assert query["QueryString"].strip() == expected.strip()  # the one definition, as it is
    statement = sqlglot.parse_one(query["QueryString"], read="trino")  # Athena's engine: Trino
    assert isinstance(statement, exp.Create) and statement.this.name == current_view_name(source)
    read = table_name(source) if config.columns is None else curated.curated_table(source)
    assert {t.name for t in statement.expression.find_all(exp.Table)} == {read}


def test_every_source_with_columns_has_its_recent_view_query(
    resources: dict[str, Any], sources: SourcesFile, source: str
) -> None:
    from apilake import curated

    config = next(s for s in sources.sources if s.name == source)
    named = resources.get(f"{pascal(source)}RecentViewQuery")
    if config.columns is None:
        assert named is None
        return
    assert named is not None and named["Type"] == "AWS::Athena::NamedQuery"
    query = named["Properties"]
    assert query["Name"] == {"Fn::Sub": f"apilake-${{Stage}}-{source}-recent"}
    assert query["QueryString"].strip() == curated.create_recent_view(config).strip()
