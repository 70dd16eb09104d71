"""template.yaml, generated from the sources file: the whole of Option A, one queue/DLQ/worker/alarm set per source.

``make template`` (``apilake template``) writes it; a test fails when the committed template and
the sources file disagree. The per-source wiring is therefore never hand-copied: a new source is a
new entry in ``layers/common/sources.yaml`` and one ``make template``.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

from apilake.config import ApiKeyAuth, BearerAuth, Source, SourcesFile, load_sources
from apilake.lake import RAW_PREFIX, source_prefix
from apilake.ledger import LEDGER_PREFIX, source_ledger_prefix
from apilake_dev import paths

ROOT = paths.ROOT
SOURCES_FILE = paths.SOURCES
TEMPLATE_FILE = paths.TEMPLATE

RUNTIME = "python3.12"
ARCHITECTURE = "arm64"
WORKER_TIMEOUT_SECONDS = 300
PLANNER_TIMEOUT_SECONDS = 300
VISIBILITY_TIMEOUT_SECONDS = 6 * WORKER_TIMEOUT_SECONDS  # AWS's advice for SQS event sources
MAX_RECEIVE_COUNT = 8  # parked (throttled) deliveries count too: leave room before the DLQ
QUEUE_RETENTION_SECONDS = 4 * 86400
DLQ_RETENTION_SECONDS = 14 * 86400  # the SQS maximum, longer than the queue's

HEADER = """\
# apilake: Option A on AWS (EventBridge Scheduler -> planner -> SQS per source -> workers -> S3 -> Glue -> Athena).
# GENERATED from layers/common/sources.yaml by devtools/apilake_dev/template.py: run `make template`, do not edit.
# Deploy: sam build && sam deploy --guided   (see README, "Deploying").
"""


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^a-z0-9]+", name) if part)


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attribute]}


def sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def skip(*checks: tuple[str, str]) -> dict[str, Any]:
    """checkov skips, each with its reason, kept next to the resource they concern."""
    return {"checkov": {"skip": [{"id": check, "comment": reason} for check, reason in checks]}}


KEY_ARN = get_att("LakeKey", "Arn")
BUCKET_ARN = get_att("LakeBucket", "Arn")
NO_VALUE = ref("AWS::NoValue")
# VpcId defaults to "" so that the VPC mode can stay off; the resources using it exist only when it is on.
OPTIONAL_VPC = {"cfn-lint": {"config": {"ignore_checks": ["W1030"]}}}
USE_KMS = [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": KEY_ARN}]


def parameters() -> dict[str, Any]:
    return {
        "Stage": {
            "Type": "String",
            "Default": "dev",
            "AllowedPattern": "^[a-z][a-z0-9]{1,9}$",
            "Description": "Environment name, part of resource names (dev, prod, ...).",
        },
        "ScheduleExpression": {
            "Type": "String",
            "Default": "cron(0 1 * * ? *)",
            "Description": "When the planner runs (EventBridge Scheduler expression).",
        },
        "ScheduleTimezone": {"Type": "String", "Default": "UTC", "Description": "Time zone of ScheduleExpression."},
        "CrawlerSchedule": {
            "Type": "String",
            "Default": "cron(45 1 * * ? *)",
            "Description": "When the Glue crawler catalogs new partitions: after the batch.",
        },
        "WorkerBatchSize": {
            "Type": "Number",
            "Default": 10,
            "MinValue": 1,
            "MaxValue": 10,
            "Description": "SQS messages (pages) per worker invocation.",
        },
        "WorkerMemorySize": {
            "Type": "Number",
            "Default": 512,
            "MinValue": 128,
            "MaxValue": 10240,
            "Description": "Worker memory in MB (also its CPU share).",
        },
        "LogLevel": {"Type": "String", "Default": "INFO", "AllowedValues": ["DEBUG", "INFO", "WARNING", "ERROR"]},
        "LogRetentionDays": {
            "Type": "Number",
            "Default": 30,
            "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653],
        },
        "QueueAgeAlarmSeconds": {
            "Type": "Number",
            "Default": 3600,
            "MinValue": 60,
            "Description": "Alarm when a queue's oldest message is older than this.",
        },
        "FailureAlarmThreshold": {
            "Type": "Number",
            "Default": 10,
            "MinValue": 1,
            "Description": "Alarm when a source's failed pages in 15 minutes reach this.",
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Optional e-mail subscribed to the alarm topic.",
        },
        "AthenaBytesScannedCutoff": {
            "Type": "Number",
            "Default": 10737418240,
            "MinValue": 10485760,
            "Description": "Athena stops a query that would scan more bytes than this.",
        },
        "AthenaResultsRetentionDays": {"Type": "Number", "Default": 30, "MinValue": 1},
        "EnableVpcEndpoints": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": "Run the functions in a VPC with endpoints for S3, SQS, Logs and Secrets Manager.",
        },
        "VpcId": {"Type": "String", "Default": "", "Description": "With EnableVpcEndpoints: the VPC."},
        "VpcCidr": {"Type": "String", "Default": "10.0.0.0/16", "Description": "With EnableVpcEndpoints: its CIDR."},
        "SubnetIds": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "With EnableVpcEndpoints: private subnets (with a NAT route to the vendors).",
        },
        "RouteTableIds": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "With EnableVpcEndpoints: route tables for the S3 gateway endpoint.",
        },
        "EnableDataEventsTrail": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": "CloudTrail data events (object reads and writes) on the raw prefix.",
        },
    }


def tls_only(bucket: str) -> dict[str, Any]:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [get_att(bucket, "Arn"), sub(f"${{{bucket}.Arn}}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only_bucket_policy(bucket: str) -> dict[str, Any]:
    """A bucket policy that only denies requests not made over TLS."""
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": ref(bucket),
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [tls_only(bucket)]},
        },
    }


def service_use(sid: str, principals: Any, condition: dict[str, Any]) -> dict[str, Any]:
    """A key policy statement letting AWS services encrypt with the key, on a condition."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": principals},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
        "Resource": "*",
        "Condition": condition,
    }


def alarm(
    description: Any,
    namespace: Any,
    metric: str,
    dimensions: dict[str, Any],
    threshold: Any,
    *,
    statistic: str = "Maximum",
    period: int = 60,
    at_least: bool = False,
) -> dict[str, Any]:
    """An alarm to the alarm topic; ``at_least``: alarm at the threshold, not only above it."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            "Statistic": statistic,
            "Period": period,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold" if at_least else "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [ref("AlarmTopic")],
            "OKActions": [ref("AlarmTopic")],
        },
    }


def vpc_interface_endpoint(service: str) -> dict[str, Any]:
    return {
        "Type": "AWS::EC2::VPCEndpoint",
        "Condition": "UseVpc",
        "Metadata": OPTIONAL_VPC,
        "Properties": {
            "VpcId": ref("VpcId"),
            "VpcEndpointType": "Interface",
            "PrivateDnsEnabled": True,
            "ServiceName": sub(f"com.amazonaws.${{AWS::Region}}.{service}"),
            "SubnetIds": ref("SubnetIds"),
            "SecurityGroupIds": [ref("EndpointSecurityGroup")],
        },
    }


def key_and_buckets() -> dict[str, Any]:
    public_block = {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    kms_encryption = {
        "ServerSideEncryptionConfiguration": [
            {
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN},
                "BucketKeyEnabled": True,
            }
        ]
    }
    return {
        "LakeKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": sub("apilake ${Stage}: lake, queues, logs, alarms and Athena results"),
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountAdministersAndDelegatesToIam",
                            "Effect": "Allow",
                            "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        service_use(
                            "CloudWatchLogsEncryptLogGroups",
                            sub("logs.${AWS::Region}.amazonaws.com"),
                            {
                                "ArnLike": {
                                    "kms:EncryptionContext:aws:logs:arn": sub(
                                        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:*"
                                    )
                                }
                            },
                        ),
                        service_use(
                            "AlarmsAndRulesPublishToEncryptedTopic",
                            ["cloudwatch.amazonaws.com", "events.amazonaws.com"],
                            {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        ),
                        service_use(
                            "CloudTrailEncryptsDataEvents",
                            "cloudtrail.amazonaws.com",
                            {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        ),
                    ],
                },
            },
        },
        "LakeKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": sub("alias/apilake-${Stage}"), "TargetKeyId": ref("LakeKey")},
        },
        "AccessLogsBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Metadata": skip(
                ("CKV_AWS_18", "This is the access-log target itself; logging it into itself would loop."),
                ("CKV_AWS_145", "S3 server access logging delivers only to SSE-S3 buckets, not SSE-KMS."),
            ),
            "Properties": {
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
                "PublicAccessBlockConfiguration": public_block,
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "ExpireLogs",
                            "Status": "Enabled",
                            "ExpirationInDays": 365,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                        }
                    ]
                },
            },
        },
        "AccessLogsBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": ref("AccessLogsBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        tls_only("AccessLogsBucket"),
                        {
                            "Sid": "S3ServerAccessLogs",
                            "Effect": "Allow",
                            "Principal": {"Service": "logging.s3.amazonaws.com"},
                            "Action": "s3:PutObject",
                            "Resource": sub("${AccessLogsBucket.Arn}/s3/*"),
                            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        },
                        {
                            "Fn::If": [
                                "UseDataEventsTrail",
                                {
                                    "Sid": "CloudTrailAclCheck",
                                    "Effect": "Allow",
                                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                                    "Action": "s3:GetBucketAcl",
                                    "Resource": get_att("AccessLogsBucket", "Arn"),
                                },
                                NO_VALUE,
                            ]
                        },
                        {
                            "Fn::If": [
                                "UseDataEventsTrail",
                                {
                                    "Sid": "CloudTrailWrite",
                                    "Effect": "Allow",
                                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                                    "Action": "s3:PutObject",
                                    "Resource": sub("${AccessLogsBucket.Arn}/cloudtrail/AWSLogs/${AWS::AccountId}/*"),
                                    "Condition": {
                                        "StringEquals": {
                                            "s3:x-amz-acl": "bucket-owner-full-control",
                                            "aws:SourceAccount": ref("AWS::AccountId"),
                                        }
                                    },
                                },
                                NO_VALUE,
                            ]
                        },
                    ],
                },
            },
        },
        "LakeBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketEncryption": kms_encryption,
                "PublicAccessBlockConfiguration": public_block,
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                # Versioning: a page rewritten because the vendor changed it keeps its previous version for 30 days.
                "VersioningConfiguration": {"Status": "Enabled"},
                "LoggingConfiguration": {"DestinationBucketName": ref("AccessLogsBucket"), "LogFilePrefix": "s3/lake/"},
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "ExpireNoncurrentVersions",
                            "Status": "Enabled",
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                        },
                        {
                            "Id": "AbortIncompleteUploads",
                            "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                        },
                    ]
                },
            },
        },
        "LakeBucketPolicy": tls_only_bucket_policy("LakeBucket"),
        "AthenaResultsBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Metadata": skip(
                ("CKV_AWS_21", "Query results are disposable and expire by lifecycle; versions would only add cost.")
            ),
            "Properties": {
                "BucketEncryption": kms_encryption,
                "PublicAccessBlockConfiguration": public_block,
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LoggingConfiguration": {
                    "DestinationBucketName": ref("AccessLogsBucket"),
                    "LogFilePrefix": "s3/athena/",
                },
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "ExpireResults",
                            "Status": "Enabled",
                            "ExpirationInDays": ref("AthenaResultsRetentionDays"),
                        },
                        {
                            "Id": "AbortIncompleteUploads",
                            "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        },
                    ]
                },
            },
        },
        "AthenaResultsBucketPolicy": tls_only_bucket_policy("AthenaResultsBucket"),
    }


def log_group(retention: Any = None) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {"RetentionInDays": retention or ref("LogRetentionDays"), "KmsKeyId": KEY_ARN},
    }


def lambda_role(log_group_name: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            },
            # ENI management for the optional VPC mode (EC2 actions only, as AWS's managed policy has them).
            "ManagedPolicyArns": [
                {
                    "Fn::If": [
                        "UseVpc",
                        sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"),
                        NO_VALUE,
                    ]
                }
            ],
            "Policies": [
                {
                    "PolicyName": "least-privilege",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "OwnLogGroup",
                                "Effect": "Allow",
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                "Resource": get_att(log_group_name, "Arn"),
                            },
                            *statements,
                        ],
                    },
                }
            ],
        },
    }


def secret_arn(source: Source) -> dict[str, Any] | None:
    auth = source.auth
    if isinstance(auth, ApiKeyAuth | BearerAuth):
        return sub(
            f"arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{auth.secret_name}-??????"
        )
    return None


def source_resources(source: Source) -> dict[str, Any]:
    p = pascal(source.name)
    queue, dlq, worker, role, logs = (
        f"{p}Queue",
        f"{p}DeadLetterQueue",
        f"{p}Worker",
        f"{p}WorkerRole",
        f"{p}WorkerLogGroup",
    )
    concurrency = source.budget.max_concurrency
    raw, ledger = source_prefix(source.name), source_ledger_prefix(source.name)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ConsumeOwnQueue",
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ],
            "Resource": get_att(queue, "Arn"),
        },
        {
            "Sid": "ContinueChainsOnOwnQueue",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": get_att(queue, "Arn"),
        },
        {
            "Sid": "WriteOwnPrefixes",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [sub(f"${{LakeBucket.Arn}}/{raw}*"), sub(f"${{LakeBucket.Arn}}/{ledger}*")],
        },
        {
            "Sid": "ReleaseOwnContinuationClaims",
            "Effect": "Allow",
            "Action": "s3:DeleteObject",
            "Resource": sub(f"${{LakeBucket.Arn}}/{ledger}*"),
        },
        # Without ListBucket a HEAD of a missing key answers 403, not 404; scoped to the source's prefixes.
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": BUCKET_ARN,
            "Condition": {"StringLike": {"s3:prefix": [f"{raw}*", f"{ledger}*"]}},
        },
        {"Sid": "UseLakeKey", **USE_KMS[0]},
    ]
    if (arn := secret_arn(source)) is not None:
        statements.append(
            {"Sid": "ReadOwnSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}
        )
    queue_props = {"KmsMasterKeyId": ref("LakeKey"), "KmsDataKeyReusePeriodSeconds": 3600}
    lambda_alarms = {
        f"{p}Worker{metric}Alarm": alarm(
            sub(f"apilake ${{Stage}} {source.name}: worker invocations {what}"),
            "AWS/Lambda",
            metric,
            {"FunctionName": ref(worker)},
            0,
            statistic="Sum",
            period=300,
        )
        for metric, what in (("Errors", "crashed"), ("Throttles", "throttled"))
    }
    return {
        dlq: {
            "Type": "AWS::SQS::Queue",
            "Properties": {**queue_props, "MessageRetentionPeriod": DLQ_RETENTION_SECONDS},
        },
        queue: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                **queue_props,
                "VisibilityTimeout": VISIBILITY_TIMEOUT_SECONDS,
                "MessageRetentionPeriod": QUEUE_RETENTION_SECONDS,
                "RedrivePolicy": {"deadLetterTargetArn": get_att(dlq, "Arn"), "maxReceiveCount": MAX_RECEIVE_COUNT},
            },
        },
        logs: log_group(),
        role: lambda_role(logs, statements),
        worker: {
            "Type": "AWS::Serverless::Function",
            "Metadata": skip(
                ("CKV_AWS_116", "SQS-triggered: failed messages go to the source queue's DLQ, not a function DLQ."),
                ("CKV_AWS_117", "Runs in a VPC when EnableVpcEndpoints=true; vendors are public APIs otherwise."),
            ),
            "Properties": {
                "Description": f"apilake worker for source {source.name}",
                "CodeUri": "functions/worker/",
                "Handler": "app.handler",
                "Role": get_att(role, "Arn"),
                "Timeout": WORKER_TIMEOUT_SECONDS,
                "MemorySize": ref("WorkerMemorySize"),
                "ReservedConcurrentExecutions": concurrency,
                "LoggingConfig": {"LogGroup": ref(logs), "LogFormat": "JSON"},
                "Environment": {
                    "Variables": {
                        "APILAKE_SOURCE": source.name,
                        "APILAKE_QUEUE_URL": ref(queue),
                        "APILAKE_CONTINUATION_STALE_SECONDS": str(WORKER_TIMEOUT_SECONDS),
                    }
                },
                "Events": {
                    "Pages": {
                        "Type": "SQS",
                        "Properties": {
                            "Queue": get_att(queue, "Arn"),
                            "BatchSize": ref("WorkerBatchSize"),
                            "FunctionResponseTypes": ["ReportBatchItemFailures"],
                            "ScalingConfig": {"MaximumConcurrency": concurrency},
                        },
                    }
                },
            },
        },
        f"{p}DlqDepthAlarm": alarm(
            sub(f"apilake ${{Stage}} {source.name}: messages in the DLQ (pages that failed for good)"),
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": get_att(dlq, "QueueName")},
            0,
        ),
        f"{p}QueueAgeAlarm": alarm(
            sub(f"apilake ${{Stage}} {source.name}: oldest message waits too long (run not finishing)"),
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"QueueName": get_att(queue, "QueueName")},
            ref("QueueAgeAlarmSeconds"),
            period=300,
        ),
        **lambda_alarms,
        f"{p}FailuresAlarm": alarm(
            sub(f"apilake ${{Stage}} {source.name}: pages failing (retried or to the DLQ)"),
            sub("apilake-${Stage}"),
            "failures_total",
            {"source": source.name, "service": "apilake"},
            ref("FailureAlarmThreshold"),
            statistic="Sum",
            period=900,
            at_least=True,
        ),
    }


def planner_resources(sources: SourcesFile) -> dict[str, Any]:
    queues = {s.name: f"{pascal(s.name)}Queue" for s in sources.sources}
    queue_urls = "{" + ", ".join(f'"{name}": "${{{queue}}}"' for name, queue in queues.items()) + "}"
    secrets = [arn for s in sources.sources if (arn := secret_arn(s)) is not None]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "FanOutToSourceQueues",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": [get_att(q, "Arn") for q in queues.values()],
        },
        {
            "Sid": "WriteRunManifests",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": sub(f"${{LakeBucket.Arn}}/{LEDGER_PREFIX}/runs/*"),
        },
        {"Sid": "UseLakeKey", **USE_KMS[0]},
    ]
    if secrets:
        statements.append(
            {
                "Sid": "ProbeWithSourceSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secrets,
            }
        )
    scheduler_input = json.dumps(
        {
            "source": "aws.scheduler",
            "detail-type": "Scheduled Event",
            "id": "<aws.scheduler.execution-id>",
            "time": "<aws.scheduler.scheduled-time>",
            "resources": ["<aws.scheduler.schedule-arn>"],
            "detail": {},
        }
    )
    return {
        "PlannerLogGroup": log_group(),
        "PlannerRole": lambda_role("PlannerLogGroup", statements),
        "PlannerScheduleDeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"KmsMasterKeyId": ref("LakeKey"), "MessageRetentionPeriod": DLQ_RETENTION_SECONDS},
        },
        "PlannerSchedulerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "scheduler.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "invoke-planner",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": "lambda:InvokeFunction",
                                    "Resource": get_att("Planner", "Arn"),
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": "sqs:SendMessage",
                                    "Resource": get_att("PlannerScheduleDeadLetterQueue", "Arn"),
                                },
                                USE_KMS[0],
                            ],
                        },
                    }
                ],
            },
        },
        "Planner": {
            "Type": "AWS::Serverless::Function",
            "Metadata": skip(
                ("CKV_AWS_116", "Scheduler invokes it asynchronously with its own retry policy and DLQ."),
                ("CKV_AWS_117", "Runs in a VPC when EnableVpcEndpoints=true; it probes public vendor APIs otherwise."),
            ),
            "Properties": {
                "Description": "apilake planner: enumerates source x date shard, fans pages out to the queues",
                "CodeUri": "functions/planner/",
                "Handler": "app.handler",
                "Role": get_att("PlannerRole", "Arn"),
                "Timeout": PLANNER_TIMEOUT_SECONDS,
                "MemorySize": 512,
                "ReservedConcurrentExecutions": 1,
                "LoggingConfig": {"LogGroup": ref("PlannerLogGroup"), "LogFormat": "JSON"},
                "Environment": {"Variables": {"APILAKE_QUEUE_URLS": sub(queue_urls)}},
                "Events": {
                    "Nightly": {
                        "Type": "ScheduleV2",
                        "Properties": {
                            "ScheduleExpression": ref("ScheduleExpression"),
                            "ScheduleExpressionTimezone": ref("ScheduleTimezone"),
                            "FlexibleTimeWindow": {"Mode": "OFF"},
                            "Input": scheduler_input,
                            "RoleArn": get_att("PlannerSchedulerRole", "Arn"),
                            "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
                            "DeadLetterConfig": {"Arn": get_att("PlannerScheduleDeadLetterQueue", "Arn")},
                        },
                    }
                },
            },
        },
        "PlannerErrorsAlarm": alarm(
            sub("apilake ${Stage}: the planner failed (some sources were not planned)"),
            "AWS/Lambda",
            "Errors",
            {"FunctionName": ref("Planner")},
            0,
            statistic="Sum",
            period=300,
        ),
        "PlannerScheduleDlqAlarm": alarm(
            sub("apilake ${Stage}: the schedule could not invoke the planner"),
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": get_att("PlannerScheduleDeadLetterQueue", "QueueName")},
            0,
        ),
    }


def catalog_resources(sources: SourcesFile) -> dict[str, Any]:
    raw_paths = [sub(f"s3://${{LakeBucket}}/{source_prefix(s.name)}") for s in sources.sources]
    crawler_configuration = json.dumps(
        {
            "Version": 1.0,
            # raw/source=<src>/ is level 3 (bucket 1, raw 2): one table per source whatever the dates and shards.
            "Grouping": {"TableGroupingPolicy": "CombineCompatibleSchemas", "TableLevelConfiguration": 3},
            "CrawlerOutput": {"Partitions": {"AddOrUpdateBehavior": "InheritFromTable"}},
        }
    )
    return {
        "GlueDatabase": {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": ref("AWS::AccountId"),
                "DatabaseInput": {
                    "Name": sub("apilake_${Stage}"),
                    "Description": "apilake raw zone, one table per source",
                },
            },
        },
        "GlueSecurityConfiguration": {
            "Type": "AWS::Glue::SecurityConfiguration",
            "Properties": {
                "Name": sub("apilake-${Stage}"),
                "EncryptionConfiguration": {
                    "S3Encryptions": [{"S3EncryptionMode": "SSE-KMS", "KmsKeyArn": KEY_ARN}],
                    "CloudWatchEncryption": {"CloudWatchEncryptionMode": "SSE-KMS", "KmsKeyArn": KEY_ARN},
                    "JobBookmarksEncryption": {"JobBookmarksEncryptionMode": "CSE-KMS", "KmsKeyArn": KEY_ARN},
                },
            },
        },
        "CrawlerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "crawl-raw-zone",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": "ReadRawZone",
                                    "Effect": "Allow",
                                    "Action": "s3:GetObject",
                                    "Resource": sub(f"${{LakeBucket.Arn}}/{RAW_PREFIX}/*"),
                                },
                                {
                                    "Sid": "ListRawZone",
                                    "Effect": "Allow",
                                    "Action": "s3:ListBucket",
                                    "Resource": BUCKET_ARN,
                                    "Condition": {"StringLike": {"s3:prefix": [f"{RAW_PREFIX}/*", RAW_PREFIX]}},
                                },
                                {
                                    "Sid": "CatalogTheDatabase",
                                    "Effect": "Allow",
                                    "Action": [
                                        "glue:GetDatabase",
                                        "glue:GetTable",
                                        "glue:GetTables",
                                        "glue:CreateTable",
                                        "glue:UpdateTable",
                                        "glue:GetPartition",
                                        "glue:GetPartitions",
                                        "glue:BatchGetPartition",
                                        "glue:CreatePartition",
                                        "glue:BatchCreatePartition",
                                        "glue:UpdatePartition",
                                        "glue:BatchUpdatePartition",
                                    ],
                                    "Resource": [
                                        sub("arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"),
                                        sub(
                                            "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:database/${GlueDatabase}"
                                        ),
                                        sub(
                                            "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:table/${GlueDatabase}/*"
                                        ),
                                    ],
                                },
                                {
                                    "Sid": "CrawlerLogs",
                                    "Effect": "Allow",
                                    "Action": [
                                        "logs:CreateLogGroup",
                                        "logs:CreateLogStream",
                                        "logs:PutLogEvents",
                                        "logs:AssociateKmsKey",
                                    ],
                                    "Resource": sub(
                                        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws-glue/crawlers*"
                                    ),
                                },
                                {"Sid": "UseLakeKey", **USE_KMS[0]},
                            ],
                        },
                    }
                ],
            },
        },
        "RawCrawler": {
            "Type": "AWS::Glue::Crawler",
            "Properties": {
                "Name": sub("apilake-${Stage}-raw"),
                "Role": get_att("CrawlerRole", "Arn"),
                "DatabaseName": ref("GlueDatabase"),
                "Targets": {"S3Targets": [{"Path": path} for path in raw_paths]},
                "Schedule": {"ScheduleExpression": ref("CrawlerSchedule")},
                "RecrawlPolicy": {"RecrawlBehavior": "CRAWL_NEW_FOLDERS_ONLY"},
                "SchemaChangePolicy": {"UpdateBehavior": "LOG", "DeleteBehavior": "LOG"},
                "Configuration": crawler_configuration,
                "CrawlerSecurityConfiguration": ref("GlueSecurityConfiguration"),
            },
        },
        "CrawlerFailedRule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": sub("apilake ${Stage}: the raw-zone crawler failed"),
                "EventPattern": {
                    "source": ["aws.glue"],
                    "detail-type": ["Glue Crawler State Change"],
                    "detail": {"state": ["Failed"], "crawlerName": [ref("RawCrawler")]},
                },
                "Targets": [{"Id": "alarm-topic", "Arn": ref("AlarmTopic")}],
            },
        },
        "AthenaWorkGroup": {
            "Type": "AWS::Athena::WorkGroup",
            "Properties": {
                "Name": sub("apilake-${Stage}"),
                "Description": "apilake: queries over the raw zone, results encrypted and expired",
                "State": "ENABLED",
                "RecursiveDeleteOption": True,
                "WorkGroupConfiguration": {
                    "EnforceWorkGroupConfiguration": True,
                    "PublishCloudWatchMetricsEnabled": True,
                    "BytesScannedCutoffPerQuery": ref("AthenaBytesScannedCutoff"),
                    "ResultConfiguration": {
                        "OutputLocation": sub("s3://${AthenaResultsBucket}/results/"),
                        "EncryptionConfiguration": {"EncryptionOption": "SSE_KMS", "KmsKey": KEY_ARN},
                    },
                },
            },
        },
    }


def alerting_resources() -> dict[str, Any]:
    return {
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"DisplayName": sub("apilake ${Stage} alarms"), "KmsMasterKeyId": ref("LakeKey")},
        },
        "AlarmTopicPolicy": {
            "Type": "AWS::SNS::TopicPolicy",
            "Properties": {
                "Topics": [ref("AlarmTopic")],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AlarmsAndRulesPublish",
                            "Effect": "Allow",
                            "Principal": {"Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"]},
                            "Action": "sns:Publish",
                            "Resource": ref("AlarmTopic"),
                            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        },
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "sns:Publish",
                            "Resource": ref("AlarmTopic"),
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        },
                    ],
                },
            },
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "HasAlarmEmail",
            "Properties": {"TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": ref("AlarmEmail")},
        },
    }


def network_and_trail_resources() -> dict[str, Any]:
    return {
        "FunctionSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Condition": "UseVpc",
            "Metadata": OPTIONAL_VPC,
            "Properties": {
                "GroupDescription": "apilake functions: outbound HTTPS only",
                "VpcId": ref("VpcId"),
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": "0.0.0.0/0",
                        "Description": "HTTPS to AWS endpoints and vendor APIs",
                    }
                ],
            },
        },
        "EndpointSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Condition": "UseVpc",
            "Metadata": OPTIONAL_VPC,
            "Properties": {
                "GroupDescription": "apilake VPC endpoints: HTTPS from the VPC",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": ref("VpcCidr"),
                        "Description": "HTTPS from the VPC",
                    }
                ],
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": ref("VpcCidr"),
                        "Description": "Replies within the VPC",
                    }
                ],
            },
        },
        "S3GatewayEndpoint": {
            "Type": "AWS::EC2::VPCEndpoint",
            "Condition": "UseVpc",
            "Metadata": OPTIONAL_VPC,
            "Properties": {
                "VpcId": ref("VpcId"),
                "VpcEndpointType": "Gateway",
                "RouteTableIds": ref("RouteTableIds"),
                "ServiceName": sub("com.amazonaws.${AWS::Region}.s3"),
            },
        },
        "SqsEndpoint": vpc_interface_endpoint("sqs"),
        "LogsEndpoint": vpc_interface_endpoint("logs"),
        "SecretsManagerEndpoint": vpc_interface_endpoint("secretsmanager"),
        "RawDataEventsTrail": {
            "Type": "AWS::CloudTrail::Trail",
            "Condition": "UseDataEventsTrail",
            "DependsOn": "AccessLogsBucketPolicy",
            "Metadata": skip(
                (
                    "CKV_AWS_67",
                    "A data-events trail for one bucket's raw prefix; the account's own trail covers regions.",
                ),
                ("CKV_AWS_252", "Delivered to S3 for audit; no SNS notification per log file is wanted."),
            ),
            "Properties": {
                "IsLogging": True,
                "IsMultiRegionTrail": False,
                "IncludeGlobalServiceEvents": False,
                "EnableLogFileValidation": True,
                "KMSKeyId": ref("LakeKey"),
                "S3BucketName": ref("AccessLogsBucket"),
                "S3KeyPrefix": "cloudtrail",
                "EventSelectors": [
                    {
                        "IncludeManagementEvents": False,
                        "ReadWriteType": "All",
                        "DataResources": [
                            {"Type": "AWS::S3::Object", "Values": [sub(f"${{LakeBucket.Arn}}/{RAW_PREFIX}/")]}
                        ],
                    }
                ],
            },
        },
    }


def dashboard(sources: SourcesFile) -> dict[str, Any]:
    names = [s.name for s in sources.sources]

    def emf(metric: str) -> list[list[str]]:
        return [["${Namespace}", metric, "source", n, "service", "apilake"] for n in names]

    def per_queue(metric: str, dlq: bool = False) -> list[list[str]]:
        suffix = "DeadLetterQueue" if dlq else "Queue"
        return [["AWS/SQS", metric, "QueueName", f"${{{pascal(n)}{suffix}.QueueName}}", {"label": n}] for n in names]  # type: ignore[list-item]

    def widget(title: str, metrics: list[Any], stat: str = "Sum", x: int = 0, y: int = 0) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 8,
            "height": 6,
            "properties": {
                "title": title,
                "metrics": metrics,
                "stat": stat,
                "period": 300,
                "region": "${AWS::Region}",
                "view": "timeSeries",
            },
        }

    widgets = [
        widget("Pages ingested per source", emf("pages_ingested_total"), x=0, y=0),
        widget("Records ingested per source", emf("records_ingested_total"), x=8, y=0),
        widget("Failed pages per source", emf("failures_total"), x=16, y=0),
        widget("Retries per source", emf("retries_total"), x=0, y=6),
        widget("Throttled requests (429) per source", emf("throttled_total"), x=8, y=6),
        widget("Queue depth", per_queue("ApproximateNumberOfMessagesVisible"), stat="Maximum", x=16, y=6),
        widget("DLQ depth", per_queue("ApproximateNumberOfMessagesVisible", dlq=True), stat="Maximum", x=0, y=12),
        widget("Age of oldest message (s)", per_queue("ApproximateAgeOfOldestMessage"), stat="Maximum", x=8, y=12),
        widget(
            "Worker duration p99 (ms)",
            [["AWS/Lambda", "Duration", "FunctionName", f"${{{pascal(n)}Worker}}", {"label": n}] for n in names],
            stat="p99",
            x=16,
            y=12,
        ),
    ]
    body = json.dumps({"widgets": widgets}, separators=(",", ":"))
    return {
        "Dashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": sub("apilake-${Stage}"),
                "DashboardBody": {"Fn::Sub": [body, {"Namespace": sub("apilake-${Stage}")}]},
            },
        }
    }


def outputs(sources: SourcesFile) -> dict[str, Any]:
    result: dict[str, Any] = {
        "PlannerFunctionName": {
            "Description": "aws lambda invoke --function-name <this> out.json",
            "Value": ref("Planner"),
        },
        "LakeBucketName": {"Description": "The S3 lake (raw/ and ledger/)", "Value": ref("LakeBucket")},
        "GlueDatabaseName": {"Value": ref("GlueDatabase")},
        "RawCrawlerName": {"Value": ref("RawCrawler")},
        "AthenaWorkGroupName": {"Value": ref("AthenaWorkGroup")},
        "AlarmTopicArn": {"Value": ref("AlarmTopic")},
        "DashboardUrl": {
            "Value": sub(
                "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}#dashboards:name=${Dashboard}"
            )
        },
    }
    for source in sources.sources:
        p = pascal(source.name)
        result[f"{p}QueueUrl"] = {"Description": f"{source.name}: work queue", "Value": ref(f"{p}Queue")}
        result[f"{p}DeadLetterQueueUrl"] = {
            "Description": f"{source.name}: dead-letter queue",
            "Value": ref(f"{p}DeadLetterQueue"),
        }
        result[f"{p}WorkerName"] = {"Description": f"{source.name}: sam logs -n {p}Worker", "Value": ref(f"{p}Worker")}
    return result


def build_template(sources: SourcesFile) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    resources.update(key_and_buckets())
    resources["CommonLayer"] = {
        "Type": "AWS::Serverless::LayerVersion",
        # layers/common/Makefile: the python3.12 builder's work plus bytecode (decision 18)
        "Metadata": {"BuildMethod": "makefile", "BuildArchitecture": ARCHITECTURE},
        "Properties": {
            "Description": "apilake runtime library, its pinned requirements and the sources file",
            "ContentUri": "layers/common/",
            "CompatibleRuntimes": [RUNTIME],
            "CompatibleArchitectures": [ARCHITECTURE],
            "RetentionPolicy": "Delete",
        },
    }
    resources.update(planner_resources(sources))
    for source in sources.sources:
        resources.update(source_resources(source))
    resources.update(catalog_resources(sources))
    resources.update(alerting_resources())
    resources.update(network_and_trail_resources())
    resources.update(dashboard(sources))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": "apilake: land data from rate-limited REST APIs in an S3 data lake (Option A)",
        "Parameters": parameters(),
        "Conditions": {
            "UseVpc": {"Fn::Equals": [ref("EnableVpcEndpoints"), "true"]},
            "UseDataEventsTrail": {"Fn::Equals": [ref("EnableDataEventsTrail"), "true"]},
            "HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [ref("AlarmEmail"), ""]}]},
        },
        "Globals": {
            "Function": {
                "Runtime": RUNTIME,
                "Architectures": [ARCHITECTURE],
                "Layers": [ref("CommonLayer")],
                "KmsKeyArn": KEY_ARN,
                "VpcConfig": {
                    "Fn::If": [
                        "UseVpc",
                        {"SubnetIds": ref("SubnetIds"), "SecurityGroupIds": [ref("FunctionSecurityGroup")]},
                        NO_VALUE,
                    ]
                },
                "Environment": {
                    "Variables": {
                        "APILAKE_LAKE_BUCKET": ref("LakeBucket"),
                        "APILAKE_SOURCES_FILE": "/opt/python/sources.yaml",
                        "POWERTOOLS_SERVICE_NAME": "apilake",
                        "POWERTOOLS_METRICS_NAMESPACE": sub("apilake-${Stage}"),
                        "POWERTOOLS_LOG_LEVEL": ref("LogLevel"),
                    }
                },
            }
        },
        "Resources": resources,
        "Outputs": outputs(sources),
    }


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order built, long strings kept on one line."""


def render(template: dict[str, Any]) -> str:
    return HEADER + yaml.dump(template, Dumper=_Dumper, sort_keys=False, width=200, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    sources = load_sources(SOURCES_FILE)
    text = render(build_template(sources))
    if args == ["--check"]:
        if TEMPLATE_FILE.read_text() != text:
            print("template.yaml is out of date with layers/common/sources.yaml: run `make template`", file=sys.stderr)
            return 1
        return 0
    TEMPLATE_FILE.write_text(text)
    print(f"wrote {TEMPLATE_FILE.relative_to(ROOT)} for sources: {', '.join(s.name for s in sources.sources)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
