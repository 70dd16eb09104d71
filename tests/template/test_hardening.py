"""Least privilege and failure paths the scanners do not check (issue 11): each asserted on the template."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from apilake.config import SourcesFile
from apilake.names import pascal, queue_name
from tests.template.conftest import ROOT

NO_VALUE = {"Ref": "AWS::NoValue"}


def by_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def conditional(statement: dict[str, Any], condition: str) -> dict[str, Any]:
    """The statement inside ``Fn::If [condition, statement, AWS::NoValue]``."""
    assert set(statement) == {"Fn::If"}, statement
    name, present, absent = statement["Fn::If"]
    assert name == condition and absent == NO_VALUE
    found: dict[str, Any] = present
    return found


def key_statements(resources: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = resources["LakeKey"]["Properties"]["KeyPolicy"]["Statement"]
    return found


def role_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def lambda_roles(resources: dict[str, Any], sources: SourcesFile) -> dict[str, Any]:
    names = ["PlannerRole", "CompletenessRole", *(f"{pascal(s.name)}WorkerRole" for s in sources.sources)]
    return {name: resources[name] for name in names}


def test_alarm_publishers_may_only_decrypt_and_make_data_keys(resources: dict[str, Any]) -> None:
    publishers = next(s for s in key_statements(resources) if s.get("Sid") == "AlarmsAndRulesPublishToEncryptedTopic")
    assert publishers["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert publishers["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_cloudtrail_uses_the_key_only_with_its_trail_and_only_when_the_trail_is_on(resources: dict[str, Any]) -> None:
    trail = [conditional(s, "UseDataEventsTrail") for s in key_statements(resources) if "Fn::If" in s]
    by_sid = {s["Sid"]: s for s in trail}
    encrypt, describe = by_sid["CloudTrailEncryptsItsLogFiles"], by_sid["CloudTrailDescribesTheKey"]
    assert encrypt["Action"] == "kms:GenerateDataKey*" and describe["Action"] == "kms:DescribeKey"
    assert "kms:EncryptionContext:aws:cloudtrail:arn" in encrypt["Condition"]["StringLike"]
    trail_name = resources["RawDataEventsTrail"]["Properties"]["TrailName"]["Fn::Sub"]
    for statement in (encrypt, describe):
        assert statement["Condition"]["StringEquals"]["aws:SourceArn"]["Fn::Sub"].endswith(f":trail/{trail_name}")
    # And no service principal outside those statements may use the key
    services = [s for s in key_statements(resources) if "Fn::If" not in s and "Service" in s.get("Principal", {})]
    assert {s["Sid"] for s in services} == {"CloudWatchLogsEncryptLogGroups", "AlarmsAndRulesPublishToEncryptedTopic"}


def test_functions_use_the_key_only_through_s3_sqs_and_athena(resources: dict[str, Any], sources: SourcesFile) -> None:
    s3, sqs = {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}, {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}
    athena = {"Fn::Sub": "athena.${AWS::Region}.amazonaws.com"}
    for name, role in lambda_roles(resources, sources).items():
        use = next(s for s in role_statements(role) if s.get("Sid") == "UseLakeKey")
        via = use["Condition"]["StringEquals"]["kms:ViaService"]
        # The completeness check reads queue attributes only (no message), and its curated step's queries write
        # their results through Athena: S3 and Athena
        assert via == ([s3, athena] if name == "CompletenessRole" else [s3, sqs]), name


def test_vpc_mode_gives_network_interfaces_not_the_managed_policy(
    resources: dict[str, Any], sources: SourcesFile
) -> None:
    for name, role in lambda_roles(resources, sources).items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        eni = [conditional(s, "UseVpc") for s in role_statements(role) if "Fn::If" in s]
        assert len(eni) == 1, name
        assert all(action.startswith("ec2:") for action in eni[0]["Action"])


def test_the_vpc_option_requires_its_network(template: dict[str, Any]) -> None:
    rule = template["Rules"]["VpcModeNeedsItsNetwork"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EnableVpcEndpoints"}, "true"]}
    asserted = str(rule["Assertions"])
    for parameter in ("VpcId", "SubnetIds", "RouteTableIds"):
        assert f"'Ref': '{parameter}'" in asserted


@pytest.mark.parametrize("endpoint", ["S3GatewayEndpoint", "SqsEndpoint", "LogsEndpoint", "SecretsManagerEndpoint"])
def test_vpc_endpoints_have_a_policy_scoped_to_this_stack_or_account(resources: dict[str, Any], endpoint: str) -> None:
    statements = resources[endpoint]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        assert statement["Resource"] != "*" and "*" not in str(statement.get("Action"))[:3]


def test_every_queue_refuses_plain_http(resources: dict[str, Any]) -> None:
    covered: set[str] = set()
    for policy in by_type(resources, "AWS::SQS::QueuePolicy").values():
        statement = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        covered |= {q["Ref"] for q in policy["Properties"]["Queues"]}
    assert covered == set(by_type(resources, "AWS::SQS::Queue"))


def test_each_dlq_accepts_only_its_own_source_queue(resources: dict[str, Any], source: str) -> None:
    dlq = resources[f"{pascal(source)}DeadLetterQueue"]["Properties"]
    allow = dlq["RedriveAllowPolicy"]
    assert allow["redrivePermission"] == "byQueue"
    [arn] = allow["sourceQueueArns"]
    assert arn["Fn::Sub"].endswith(":" + queue_name("${Stage}", source))


def test_the_access_log_bucket_ties_each_service_to_its_source(resources: dict[str, Any]) -> None:
    statements = resources["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allows = [s if "Fn::If" not in s else conditional(s, "UseDataEventsTrail") for s in statements]
    for statement in (s for s in allows if s["Effect"] == "Allow"):
        condition = str(statement["Condition"])
        assert "aws:SourceArn" in condition, statement["Sid"]


def test_the_schedule_is_named_per_stage(resources: dict[str, Any]) -> None:
    schedule = resources["Planner"]["Properties"]["Events"]["Nightly"]["Properties"]
    assert "${Stage}" in schedule["Name"]["Fn::Sub"]


def test_a_failed_planner_invocation_reaches_a_queue_that_alarms(resources: dict[str, Any]) -> None:
    invoke = resources["Planner"]["Properties"]["EventInvokeConfig"]
    assert invoke["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["PlannerFailureQueue", "Arn"]},
    }
    assert resources["PlannerFailureQueue"]["Properties"]["KmsMasterKeyId"] == {"Ref": "LakeKey"}
    alarm = resources["PlannerFailedInvocationsAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["PlannerFailureQueue", "QueueName"]}}]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    # And the planner's role may send there (SAM adds no policy to a function with its own role)
    sends = [s for s in role_statements(resources["PlannerRole"]) if s.get("Action") == "sqs:SendMessage"]
    assert {"Fn::GetAtt": ["PlannerFailureQueue", "Arn"]} in [s["Resource"] for s in sends]
    skip = resources["Planner"]["Metadata"]["checkov"]["skip"]
    assert "PlannerFailureQueue" in next(c["comment"] for c in skip if c["id"] == "CKV_AWS_116")


def test_every_stage_in_samconfig_says_where_alarms_go() -> None:
    # The alarms reach nobody without AlarmEmail: each stage's deploy parameters name it, so the
    # guided deploy and a reader of samconfig.toml both see the question.
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    stages = [name for name, env in config.items() if isinstance(env, dict) and "deploy" in env]
    assert stages
    for stage in stages:
        assert "AlarmEmail=" in config[stage]["deploy"]["parameters"]["parameter_overrides"], stage
