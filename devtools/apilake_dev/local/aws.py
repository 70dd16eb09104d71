"""AWS on one machine: moto's server on 127.0.0.1, and the resources template.yaml declares, created in it.

The queues, DLQs, redrive policies, visibility timeouts, batch sizes, concurrency caps and function
environments come from the template itself (template.yaml with its per-source region generated from
the sources file being run; a small resolver for the intrinsics it uses), so the local flow cannot
drift from what is deployed.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial, wraps
from pathlib import Path
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

from apilake_dev.template.generate import parse_template, template_text_for

REGION = "us-east-1"
ACCOUNT = "123456789012"
PLANNER = "Planner"  # the planner's logical id (other functions run on a schedule too)
PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::StackName": "apilake-local"}


class LazyQueueAttributes(Mapping[str, Any]):
    """A moto queue's attributes, each computed when read.

    moto 5 builds every attribute of a queue, its approximate message counts included (a pass over
    all its messages), each time it sends one message, only to read ContentBasedDeduplication: sending
    n messages costs O(n^2) (2,000 messages take minutes). Same keys and values, computed on demand.
    """

    def __init__(self, queue: Any) -> None:
        from moto.core.utils import camelcase_to_underscores

        names = list(queue.BASE_ATTRIBUTES)
        names += list(queue.FIFO_ATTRIBUTES) if queue.fifo_queue else []
        names += list(queue.KMS_ATTRIBUTES) if queue.kms_master_key_id else []
        self._getters: dict[str, Callable[[], Any]] = {
            name: partial(getattr, queue, camelcase_to_underscores(name)) for name in names
        }
        if queue.policy:
            self._getters["Policy"] = lambda: queue.policy
        if queue.redrive_policy:
            self._getters["RedrivePolicy"] = lambda: json.dumps(queue.redrive_policy)

    def __getitem__(self, key: str) -> Any:
        value = self._getters[key]()
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._getters)

    def __len__(self) -> int:
        return len(self._getters)


MOTO_ORIGINALS: dict[str, Any] = {}  # what patch_moto_sqs replaced (for tests)

# moto's SQS backend methods that read and rewrite a queue's message list. moto's server answers each
# request in a thread of its own and moto takes no lock around them: two deletes at once each rebuild
# the list without their own message and the last assignment wins, putting the other's message back,
# in flight until its visibility timeout although its delete was answered as a success (and a send or
# a dead-letter move at that moment is lost the same way).
QUEUE_MUTATORS = (
    "send_message",
    "send_message_batch",
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
)


def one_at_a_time(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of moto's SQS backend, run holding its queue's ``_messages_lock``.

    That lock, not one of ours: it is the condition a long-polling receive waits on, and waiting
    releases it, so a receive waiting for messages does not hold up the sends and deletes of others.
    """

    @wraps(method)
    def locked(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return method(self, queue_name, *args, **kwargs)

    locked.apilake_one_at_a_time = True  # type: ignore[attr-defined]
    return locked


def patch_moto_sqs() -> None:
    """Install :class:`LazyQueueAttributes` on moto's queues and make its :data:`QUEUE_MUTATORS` one
    at a time per queue (this process's moto; idempotent)."""
    from moto.sqs.models import Queue, SQSBackend

    current = Queue.__dict__["attributes"]
    if not (isinstance(current, property) and current.fget is LazyQueueAttributes):
        MOTO_ORIGINALS["Queue.attributes"] = current
        Queue.attributes = property(LazyQueueAttributes)  # type: ignore[assignment,method-assign]
    for name in QUEUE_MUTATORS:
        method = SQSBackend.__dict__[name]
        if not getattr(method, "apilake_one_at_a_time", False):
            MOTO_ORIGINALS[f"SQSBackend.{name}"] = method
            setattr(SQSBackend, name, one_at_a_time(method))


LOOPBACK = "127.0.0.1"
ANY_ADDRESS = ("0.0.0.0", "::")


class LocalAws:
    """moto's server, on a free port of 127.0.0.1 unless told otherwise; use as a context manager.

    ``bind``: the address it listens on (``0.0.0.0``: every interface, for containers that reach this
    machine through a Docker bridge); ``endpoint`` is always an address this machine can connect to.
    """

    def __init__(self, bind: str = LOOPBACK, port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        patch_moto_sqs()
        self.bind, self.port = bind, port
        self._server = ThreadedMotoServer(ip_address=bind, port=port, verbose=False)
        self.endpoint = ""

    def __enter__(self) -> LocalAws:
        if self.port:
            _check_free(self.bind, self.port)  # moto's server thread would die, and its start wait forever
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{LOOPBACK if host in ANY_ADDRESS else host}:{port}"
        # moto keeps its state per process, not per server: start from nothing, as a new account would.
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this emulator with the unchanged handler code."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )


def _check_free(host: str, port: int) -> None:
    """Raise :class:`OSError` naming ``host:port`` unless a server can listen there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc


@dataclass(frozen=True)
class WorkerSpec:
    source: str
    function: str
    queue_url: str
    dlq_url: str
    batch_size: int
    max_concurrency: int
    timeout_seconds: float
    environment: dict[str, str]


@dataclass
class LocalDeployment:
    bucket: str
    database: str
    queues: dict[str, str] = field(default_factory=dict)  # source -> queue URL
    dlqs: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerSpec] = field(default_factory=list)
    planner_environment: dict[str, str] = field(default_factory=dict)
    visibility_timeout: dict[str, int] = field(default_factory=dict)
    max_receive_count: dict[str, int] = field(default_factory=dict)
    stage: str = ""


class _Resolver:
    """Resolves the intrinsics our template uses: Ref, Fn::GetAtt, Fn::Sub, Fn::If on known conditions."""

    def __init__(self, parameters: dict[str, Any], conditions: dict[str, bool]) -> None:
        self.parameters = parameters
        self.conditions = conditions
        self.physical: dict[str, str] = {}  # logical id -> what Ref gives
        self.attributes: dict[tuple[str, str], str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                return self.attributes[(arg[0], arg[1])]
            if key == "Fn::Sub":
                text, variables = (
                    (arg, {}) if isinstance(arg, str) else (arg[0], {k: self(v) for k, v in arg[1].items()})
                )
                return re.sub(
                    r"\$\{([^}]+)\}", lambda m: str(variables.get(m.group(1)) or self._name(m.group(1))), text
                )
            if key == "Fn::If":
                return self(arg[1] if self.conditions[arg[0]] else arg[2])
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value

    def _name(self, name: str) -> str:
        if "." in name:
            logical, attribute = name.split(".", 1)
            return self.attributes[(logical, attribute)]
        return str(self._ref(name))

    def _ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]


def load_template(sources_file: Path) -> dict[str, Any]:
    """The template as it would be for ``sources_file``: the hand-written part of template.yaml and the
    region generated from that file, in memory (any valid sources file runs locally, template or not)."""
    return parse_template(template_text_for(sources_file))


def deploy(
    template: dict[str, Any],
    aws: LocalAws,
    sources_file: Path,
    parameter_overrides: dict[str, Any] | None = None,
    visibility_timeout: int | None = None,
    worker_timeout: float | None = None,
) -> LocalDeployment:
    """Create in the emulator what the template declares for the flow: the lake bucket, every queue
    with its DLQ and redrive policy, and the functions' environments and event-source settings.

    ``visibility_timeout`` replaces the template's (and the workers' timeout becomes a sixth of it,
    keeping the template's ratio, unless ``worker_timeout`` says otherwise: it must stay below the
    visibility timeout) so that redelivery can be watched in seconds, not half hours.
    """
    if worker_timeout is not None and (visibility_timeout is None or worker_timeout >= visibility_timeout):
        raise ValueError("a local worker timeout needs a longer local visibility timeout")
    parameters = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    parameters.update(parameter_overrides or {})
    stage = parameters.get("Stage", "local")
    conditions = {"UseVpc": False, "UseDataEventsTrail": False, "HasAlarmEmail": False}
    resolve = _Resolver(parameters, conditions)
    resources: dict[str, Any] = template["Resources"]
    s3, sqs = aws.client("s3"), aws.client("sqs")

    bucket = f"apilake-{stage}-lake"
    s3.create_bucket(Bucket=bucket)
    resolve.physical["LakeBucket"] = bucket
    resolve.physical["LakeKey"] = "local-key"  # KMS is not emulated: queues and objects are stored unencrypted
    database = resolve(resources["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"])
    resolve.physical["GlueDatabase"] = database
    # Named only: locally DuckDB runs the curated step (apilake_dev.curate), not Athena.
    resolve.physical["AthenaWorkGroup"] = resolve(resources["AthenaWorkGroup"]["Properties"]["Name"])

    deployment = LocalDeployment(bucket=bucket, database=database, stage=stage)
    queues = {name: r for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    # Dead-letter queues first: the others' redrive policies point at them.
    ordered = sorted(queues, key=lambda name: "RedrivePolicy" in queues[name].get("Properties", {}))
    for name in ordered:
        properties = dict(queues[name].get("Properties", {}))
        attributes: dict[str, str] = {}
        if "VisibilityTimeout" in properties:
            attributes["VisibilityTimeout"] = str(visibility_timeout or properties["VisibilityTimeout"])
        if "MessageRetentionPeriod" in properties:
            attributes["MessageRetentionPeriod"] = str(properties["MessageRetentionPeriod"])
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(resolve(properties["RedrivePolicy"]))
        queue_name = resolve(properties["QueueName"]) if "QueueName" in properties else f"apilake-{stage}-{name}"
        url = sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resolve.physical[name] = url
        resolve.attributes[(name, "Arn")] = arn
        resolve.attributes[(name, "QueueName")] = url.rsplit("/", 1)[-1]

    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    local_env = {"APILAKE_SOURCES_FILE": str(sources_file.resolve()), "POWERTOOLS_METRICS_DISABLED": "true"}
    by_queue_arn = {resolve.attributes[(name, "Arn")]: name for name in queues}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        environment = {
            k: str(v)
            for k, v in resolve({**globals_env, **properties.get("Environment", {}).get("Variables", {})}).items()
        }
        environment.update(local_env)
        for event in properties.get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue = by_queue_arn[resolve(event["Properties"]["Queue"])]
            redrive = json.loads(
                sqs.get_queue_attributes(QueueUrl=resolve.physical[queue], AttributeNames=["RedrivePolicy"])[
                    "Attributes"
                ]["RedrivePolicy"]
            )
            dlq = next(q for q in queues if resolve.attributes[(q, "Arn")] == redrive["deadLetterTargetArn"])
            source = environment["APILAKE_SOURCE"]
            timeout = float(properties["Timeout"]) if visibility_timeout is None else visibility_timeout / 6
            timeout = worker_timeout or timeout
            if visibility_timeout is not None:
                environment["APILAKE_SAFETY_MARGIN_SECONDS"] = str(min(5.0, timeout / 5))
                environment["APILAKE_CONTINUATION_STALE_SECONDS"] = str(timeout)
            deployment.queues[source] = resolve.physical[queue]
            deployment.dlqs[source] = resolve.physical[dlq]
            deployment.visibility_timeout[source] = int(
                visibility_timeout or queues[queue]["Properties"]["VisibilityTimeout"]
            )
            deployment.max_receive_count[source] = int(redrive["maxReceiveCount"])
            deployment.workers.append(
                WorkerSpec(
                    source=source,
                    function=name,
                    queue_url=resolve.physical[queue],
                    dlq_url=resolve.physical[dlq],
                    batch_size=int(resolve(event["Properties"].get("BatchSize", 10))),
                    max_concurrency=int(event["Properties"]["ScalingConfig"]["MaximumConcurrency"]),
                    timeout_seconds=timeout,
                    environment=environment,
                )
            )
        if name == PLANNER:
            deployment.planner_environment = environment
    return deployment
