"""The container mode's stack (container/fargate.yaml): the latest cfn-lint and checkov, then least privilege,
the schedule, the task definition and the alarms asserted on the template, and its agreement with the image
(container/Dockerfile) and the main stack (template.yaml)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from apilake_dev.template.generate import parse_template
from tests.template.conftest import ROOT
from tests.template.test_container_image import DOCKERFILE, entrypoint, env_of, parse_dockerfile
from tests.template.test_hardening import role_statements
from tests.template.test_tools import CFN_LINT, CHECKOV

STACK = ROOT / "container" / "fargate.yaml"
NO_VALUE = {"Ref": "AWS::NoValue"}
BUCKET = "arn:${AWS::Partition}:s3:::${LakeBucketName}"
CLUSTER = {"Fn::If": ["CreateCluster", {"Fn::GetAtt": ["Cluster", "Arn"]}, {"Ref": "ClusterArn"}]}
TOPIC = {"Ref": "AlarmTopicArn"}


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return parse_template(STACK.read_text())


@pytest.fixture(scope="module")
def resources(stack: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = stack["Resources"]
    return found


@pytest.fixture(scope="module")
def container(resources: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert isinstance(found, dict)
    return found


def statements(resources: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    """A role's statements by Sid; a conditional one (``Fn::If [c, s, NoValue]``) as ``c:Sid``."""
    found = {}
    for statement in role_statements(resources[role]):
        if "Fn::If" in statement:
            condition, present, absent = statement["Fn::If"]
            assert absent == NO_VALUE
            found[f"{condition}:{present['Sid']}"] = present
        else:
            found[statement["Sid"]] = statement
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.slow
def test_the_latest_cfn_lint_is_clean() -> None:
    assert CFN_LINT.exists(), "cfn-lint's environment is missing: `make cfn-lint-env` (make test does it)"
    result = subprocess.run([str(CFN_LINT), str(STACK)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr  # no error, warning or informational finding


@pytest.mark.slow
def test_checkov_finds_no_failed_check(resources: dict[str, Any]) -> None:
    assert CHECKOV.exists(), "checkov's isolated environment is missing: `make checkov-env` (make test does it)"
    command = [str(CHECKOV), "-f", str(STACK), "--framework", "cloudformation", "--skip-download", "--output", "json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["resource_count"] == len(resources)


def test_no_role_has_a_wildcard_action_or_resource_but_the_ecr_login(resources: dict[str, Any]) -> None:
    roles = [name for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"]
    assert sorted(roles) == ["ExecutionRole", "SchedulerRole", "TaskRole"]
    for role in roles:
        for sid, statement in statements(resources, role).items():
            assert statement["Effect"] == "Allow"
            assert not any("*" in action for action in as_list(statement["Action"])), (role, sid)
            if (role, sid) != ("ExecutionRole", "EcrLogin"):  # GetAuthorizationToken has no resource to name
                assert "*" not in as_list(statement["Resource"]), (role, sid)
    login = statements(resources, "ExecutionRole")["EcrLogin"]
    assert (login["Action"], login["Resource"]) == ("ecr:GetAuthorizationToken", "*")


def test_the_task_role_reads_and_writes_only_the_lakes_raw_and_ledger_prefixes(resources: dict[str, Any]) -> None:
    found = statements(resources, "TaskRole")
    assert set(found) == {
        "ReadWriteLakePrefixes",
        "ReleaseContinuationClaims",
        "ListLakePrefixes",
        "UseLakeKeyThroughS3",
        "HasSecrets:ReadSourcesSecrets",
    }
    objects = found["ReadWriteLakePrefixes"]
    assert objects["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert objects["Resource"] == [{"Fn::Sub": f"{BUCKET}/raw/*"}, {"Fn::Sub": f"{BUCKET}/ledger/*"}]
    # Deletes only in the ledger (a chain's continuation claim released), never a page
    release = found["ReleaseContinuationClaims"]
    assert (release["Action"], release["Resource"]) == ("s3:DeleteObject", {"Fn::Sub": f"{BUCKET}/ledger/*"})
    listing = found["ListLakePrefixes"]
    assert listing["Action"] == "s3:ListBucket" and listing["Resource"] == {"Fn::Sub": BUCKET}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["raw/*", "ledger/*"]}}


def test_the_task_uses_the_key_through_s3_only_and_reads_only_the_named_secrets(resources: dict[str, Any]) -> None:
    found = statements(resources, "TaskRole")
    key = found["UseLakeKeyThroughS3"]
    assert key["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"] and key["Resource"] == {"Ref": "LakeKeyArn"}
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}
    secrets = found["HasSecrets:ReadSourcesSecrets"]
    assert secrets["Action"] == "secretsmanager:GetSecretValue" and secrets["Resource"] == {"Ref": "SecretArns"}


def test_secrets_are_granted_only_when_some_are_named(stack: dict[str, Any]) -> None:
    assert stack["Parameters"]["SecretArns"] == {
        **stack["Parameters"]["SecretArns"],
        "Type": "CommaDelimitedList",
        "Default": "",
    }
    has = {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SecretArns"}]}, ""]}]}
    assert stack["Conditions"]["HasSecrets"] == has


def test_the_execution_role_pulls_this_stacks_image_and_writes_its_log_group(resources: dict[str, Any]) -> None:
    found = statements(resources, "ExecutionRole")
    assert set(found) == {"EcrLogin", "PullOwnImage", "OwnLogGroup"}
    pull = found["PullOwnImage"]
    assert pull["Action"] == ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert pull["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    logs = found["OwnLogGroup"]
    assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == {"Fn::GetAtt": ["TaskLogGroup", "Arn"]}


def test_the_task_role_may_be_assumed_by_ecs_tasks_of_this_account_only(resources: dict[str, Any]) -> None:
    (trust,) = resources["TaskRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert trust["Condition"]["ArnLike"] == {
        "aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:*"}
    }


def test_the_scheduler_may_run_only_this_task_in_its_cluster_and_pass_only_its_two_roles(
    resources: dict[str, Any],
) -> None:
    found = statements(resources, "SchedulerRole")
    assert set(found) == {"RunTheTask", "PassTheTaskRoles", "DeadLetters", "UseLakeKeyThroughSqs"}
    run = found["RunTheTask"]
    assert (run["Action"], run["Resource"]) == ("ecs:RunTask", {"Ref": "TaskDefinition"})
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": CLUSTER}}
    passing = found["PassTheTaskRoles"]
    assert passing["Action"] == "iam:PassRole"
    assert passing["Resource"] == [{"Fn::GetAtt": ["ExecutionRole", "Arn"]}, {"Fn::GetAtt": ["TaskRole", "Arn"]}]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    assert found["DeadLetters"]["Resource"] == {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    via = found["UseLakeKeyThroughSqs"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert via == {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}


def schedule_input(resources: dict[str, Any]) -> dict[str, Any]:
    """The schedule's RunTask request, its ``Fn::Sub`` variables written as ``<Name>`` (a list's as ``<a>, <b>``)."""
    template, variables = resources["Schedule"]["Properties"]["Target"]["Input"]["Fn::Sub"]
    assert variables["Cluster"] == CLUSTER and variables["Subnets"] == {"Fn::Join": ['", "', {"Ref": "SubnetIds"}]}
    text = template.replace("${Subnets}", '<subnet-a>", "<subnet-b>')
    for name in ("Cluster", "TaskDefinition", "TaskSecurityGroup", "AssignPublicIp", "LakeBucketName", "LogLevel"):
        text = text.replace("${" + name + "}", f"<{name}>")
    document: dict[str, Any] = json.loads(text.replace("${MaxRunSeconds}", "<MaxRunSeconds>"))
    return document


def test_the_schedule_runs_one_fargate_task_of_the_task_definition(resources: dict[str, Any]) -> None:
    schedule = resources["Schedule"]["Properties"]
    assert schedule["ScheduleExpression"] == {"Ref": "ScheduleExpression"} and schedule["State"] == {
        "Ref": "ScheduleState"
    }
    target = schedule["Target"]
    assert target["Arn"] == {"Fn::Sub": "arn:${AWS::Partition}:scheduler:::aws-sdk:ecs:runTask"}
    assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    run = schedule_input(resources)
    assert (run["Cluster"], run["TaskDefinition"], run["Count"], run["LaunchType"]) == (
        "<Cluster>",
        "<TaskDefinition>",
        1,
        "FARGATE",
    )
    network = run["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == ["<subnet-a>", "<subnet-b>"] and network["SecurityGroups"] == ["<TaskSecurityGroup>"]
    assert network["AssignPublicIp"] == "<AssignPublicIp>"
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}


def test_the_schedules_task_runs_the_firings_run_with_the_task_definitions_command(
    resources: dict[str, Any], container: dict[str, Any]
) -> None:
    # Given the task definition's command and the schedule's RunTask request
    (override,) = schedule_input(resources)["Overrides"]["ContainerOverrides"]
    # Then the schedule's task runs the same command, with the Scheduler's fire time as its --scheduled-time (every
    # attempt of one firing the same run id and ingestion date), in the task definition's container
    assert override["Name"] == container["Name"]
    command = [f"<{part['Ref']}>" if isinstance(part, dict) else part for part in container["Command"]]
    assert override["Command"] == [command[0], "--scheduled-time", "<aws.scheduler.scheduled-time>", *command[1:]]


def test_the_task_security_group_lets_nothing_in_and_only_https_out(resources: dict[str, Any]) -> None:
    group = resources["TaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]] == [("tcp", 443, 443)]


def test_the_task_definition_is_fargate_read_only_and_runs_as_the_images_user(
    resources: dict[str, Any], container: dict[str, Any]
) -> None:
    task = resources["TaskDefinition"]["Properties"]
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    assert (task["Cpu"], task["Memory"]) == ({"Ref": "TaskCpu"}, {"Ref": "TaskMemory"})
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    assert container["User"] == final.args("USER")[-1] and container["ReadonlyRootFilesystem"] is True
    assert container["Privileged"] is False and container["LinuxParameters"]["Capabilities"] == {"Drop": ["ALL"]}
    # /tmp, where the image writes (its HOME and --home), is the task's own volume
    assert task["Volumes"] == [{"Name": "tmp"}]
    assert container["MountPoints"] == [{"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False}]
    assert env_of(final)["HOME"] == "/tmp" and entrypoint(final)[2].startswith("/tmp/")


def test_the_task_writes_the_lake_bucket_with_the_lambdas_settings(container: dict[str, Any]) -> None:
    # A scheduled run: the main stack's completeness check, report, curated step and run alarms judge it
    command = ["--scheduled", "--bucket", {"Ref": "LakeBucketName"}, "--log-level", {"Ref": "LogLevel"}]
    assert container["Command"] == [*command, "--max-seconds", {"Ref": "MaxRunSeconds"}]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    assert env["APILAKE_SOURCES_FILE"] == env_of(final)["APILAKE_SOURCES_FILE"]
    # The main stack's Globals, where a function's value is the stack's (its parameters have the same names here)
    main = parse_template((ROOT / "template.yaml").read_text())
    lambdas = main["Globals"]["Function"]["Environment"]["Variables"]
    shared = {"APILAKE_STAGE", "APILAKE_LOG_LEVEL", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    shared |= {"POWERTOOLS_LOG_LEVEL"}
    assert {name: env[name] for name in shared} == {name: lambdas[name] for name in shared}
    assert env["APILAKE_LAKE_BUCKET"] == {"Ref": "LakeBucketName"}


def test_the_log_group_is_the_stages_ingest_group_encrypted_and_kept_as_the_main_stacks(
    stack: dict[str, Any], resources: dict[str, Any], container: dict[str, Any]
) -> None:
    group = resources["TaskLogGroup"]["Properties"]
    assert group["LogGroupName"] == {"Fn::Sub": "/apilake/${Stage}/ingest"}
    assert group["KmsKeyId"] == {"Ref": "LakeKeyArn"} and group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    logging = container["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs" and logging["Options"]["awslogs-group"] == {"Ref": "TaskLogGroup"}
    main = parse_template((ROOT / "template.yaml").read_text())["Parameters"]
    for name in ("Stage", "LogRetentionDays", "ScheduleExpression", "ScheduleTimezone"):
        ours, theirs = stack["Parameters"][name], main[name]
        assert {k: ours.get(k) for k in ("AllowedPattern", "AllowedValues", "Default")} == {
            k: theirs.get(k) for k in ("AllowedPattern", "AllowedValues", "Default")
        }, name


def test_a_stopped_task_with_a_non_zero_exit_or_that_never_started_is_sent_to_the_alarm_topic(
    resources: dict[str, Any],
) -> None:
    rule = resources["TaskFailedRule"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"]
    detail = pattern["detail"]
    assert detail["lastStatus"] == ["STOPPED"]
    family = "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task-definition/apilake-${Stage}-ingest:"
    assert detail["taskDefinitionArn"] == [{"prefix": {"Fn::Sub": family}}]
    assert resources["TaskDefinition"]["Properties"]["Family"] == {"Fn::Sub": "apilake-${Stage}-ingest"}
    assert detail["$or"] == [
        {"containers": {"exitCode": [{"anything-but": 0}]}},
        {"stopCode": ["TaskFailedToStart"]},
    ]
    (target,) = rule["Targets"]
    assert target["Arn"] == TOPIC
    paths = target["InputTransformer"]["InputPathsMap"]
    assert set(paths) == {"task", "reason", "stopCode", "exitCode"}
    text = target["InputTransformer"]["InputTemplate"]["Fn::Sub"]
    assert all(f"<{name}>" in text for name in paths)
    # It says what resumes the run (its fire time again), not that the next run continues it
    assert "--scheduled-time" in text and "A new run continues" not in text


@pytest.mark.parametrize(
    ("alarm", "namespace", "metric", "operator"),
    [
        ("ZeroPagesLandedAlarm", {"Fn::Sub": "apilake-${Stage}"}, "ingest_pages_landed", "LessThanOrEqualToThreshold"),
        ("FailedPagesAlarm", {"Fn::Sub": "apilake-${Stage}"}, "ingest_pages_failed", "GreaterThanOrEqualToThreshold"),
        ("ErrorsAlarm", {"Fn::Sub": "apilake-${Stage}"}, "ingest_errors_logged", "GreaterThanOrEqualToThreshold"),
        ("ScheduleDlqAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "GreaterThanThreshold"),
    ],
)
def test_each_alarm_of_this_mode_watches_its_metric_and_tells_the_main_stacks_topic(
    resources: dict[str, Any], alarm: str, namespace: Any, metric: str, operator: str
) -> None:
    properties = resources[alarm]["Properties"]
    assert (properties["Namespace"], properties["MetricName"], properties["ComparisonOperator"]) == (
        namespace,
        metric,
        operator,
    )
    assert properties["AlarmActions"] == [TOPIC] and properties["OKActions"] == [TOPIC]


def test_the_runs_alarms_watch_the_runners_counts_for_the_stack_and_keep_the_last_runs_state(
    resources: dict[str, Any],
) -> None:
    # The runner's end-of-run counts (apilake.observability.count_stack: the service dimension alone; that the image's
    # entrypoint emits them: test_container_image.py); no run, no datapoint: the alarm keeps the last run's state
    for alarm in ("ZeroPagesLandedAlarm", "FailedPagesAlarm"):
        properties = resources[alarm]["Properties"]
        assert properties["Dimensions"] == [{"Name": "service", "Value": "apilake"}]
        assert properties["TreatMissingData"] == "ignore"
    assert resources["ZeroPagesLandedAlarm"]["Properties"]["Threshold"] == 0


def test_the_main_stacks_outputs_give_this_stacks_parameters_of_it(stack: dict[str, Any]) -> None:
    # What this stack takes of the main one is what the main one outputs, under the same names
    main = parse_template((ROOT / "template.yaml").read_text())
    outputs = main["Outputs"]
    for name in ("LakeBucketName", "LakeKeyArn", "AlarmTopicArn"):
        assert name in stack["Parameters"] and name in outputs, name
    assert outputs["LakeKeyArn"]["Value"] == {"Fn::GetAtt": ["LakeKey", "Arn"]}
    # And the main stack's planner schedules can be switched off while this task ingests
    assert main["Parameters"]["ScheduleState"]["AllowedValues"] == ["ENABLED", "DISABLED"]


def test_errors_are_counted_from_the_tasks_json_logs(resources: dict[str, Any]) -> None:
    flt = resources["ErrorsMetricFilter"]["Properties"]
    assert flt["LogGroupName"] == {"Ref": "TaskLogGroup"} and flt["FilterPattern"] == '{ $.level = "ERROR" }'
    (transformation,) = flt["MetricTransformations"]
    errors = resources["ErrorsAlarm"]["Properties"]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == (
        errors["Namespace"],
        errors["MetricName"],
    )
    assert "Dimensions" not in transformation and "Dimensions" not in errors


def test_the_image_repository_is_private_immutable_scanned_and_encrypted(resources: dict[str, Any]) -> None:
    repository = resources["Repository"]["Properties"]
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repository["EncryptionConfiguration"] == {"EncryptionType": "KMS", "KmsKey": {"Ref": "LakeKeyArn"}}
    assert "RepositoryPolicyText" not in repository
    image = {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${Repository}:${ImageTag}"}
    assert resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Image"] == image


def test_everything_is_encrypted_with_the_main_stacks_key(resources: dict[str, Any]) -> None:
    key = {"Ref": "LakeKeyArn"}
    assert resources["ScheduleDeadLetterQueue"]["Properties"]["KmsMasterKeyId"] == key
    assert resources["TaskLogGroup"]["Properties"]["KmsKeyId"] == key
    policy = resources["ScheduleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [(s["Sid"], s["Effect"]) for s in policy] == [("DenyInsecureTransport", "Deny")]
