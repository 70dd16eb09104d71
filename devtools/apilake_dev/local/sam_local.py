"""`apilake local up`: the local AWS stand-in for `sam local invoke`, and the env-vars file that points
the functions at it.

SAM CLI runs a function in a container with the environment the template declares for it, a value
replaced by the env-vars file's when the file names the function (its logical id) and the variable
(``samcli.local.lambdafn.env_vars.EnvironmentVariables.resolve``). A variable the template does not
declare is never passed, ``AWS_ENDPOINT_URL`` among them. So the functions learn where the stand-in
is from variables they all declare (the template's Globals): ``APILAKE_AWS_ENDPOINT_URL`` (empty in
AWS), the lake bucket, the stage whose queues the planner finds by name, the sources file, and each
worker's queue URL. The resources are the deployed ones, created from template.yaml as the local
run creates them (:func:`apilake_dev.local.aws.deploy`).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from apilake.config import load_sources
from apilake.exceptions import ApilakeError
from apilake_dev import paths
from apilake_dev.local.aws import LOOPBACK, LocalAws, LocalDeployment, deploy
from apilake_dev.local.catalog import ensure_database
from apilake_dev.template.generate import parse_template

ENDPOINT_VARIABLE = "APILAKE_AWS_ENDPOINT_URL"
# Where `sam build` puts layers/common/sources.yaml: what the functions read in their container.
LAYER_SOURCES_FILE = "/opt/python/sources.yaml"
DEFAULT_PORT = 5100  # moto's own default, 5000, is taken by AirPlay on macOS
# The host as a Lambda container sees it (Docker Desktop; on Linux with --add-host host.docker.internal:host-gateway).
DEFAULT_ENDPOINT_HOST = "host.docker.internal"
DEFAULT_ENV_VARS_FILE = "sam-env-vars.json"  # under the home folder (.apilake)
FUNCTION_TYPE = "AWS::Serverless::Function"
WORKER_EVENT_SOURCE = "api-a"  # the source of events/worker.json's message


def declared_variables(template: Mapping[str, Any]) -> dict[str, set[str]]:
    """Function logical id -> the environment variables SAM CLI passes it: the Globals' and its own."""
    shared = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return {
        name: set(shared) | set(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
        for name, resource in template["Resources"].items()
        if resource["Type"] == FUNCTION_TYPE
    }


def worker_sources(template: Mapping[str, Any]) -> list[str]:
    """The sources the template has a worker for (its APILAKE_SOURCE), sorted."""
    functions = (r for r in template["Resources"].values() if r["Type"] == FUNCTION_TYPE)
    variables = (r.get("Properties", {}).get("Environment", {}).get("Variables", {}) for r in functions)
    return sorted(str(v["APILAKE_SOURCE"]) for v in variables if "APILAKE_SOURCE" in v)


def at_endpoint(url: str, endpoint_url: str) -> str:
    """``url`` (a queue URL moto gave this machine) as seen from ``endpoint_url``'s host."""
    endpoint = urlsplit(endpoint_url)
    return urlsplit(url)._replace(scheme=endpoint.scheme, netloc=endpoint.netloc).geturl()


def env_vars(
    template: Mapping[str, Any],
    deployment: LocalDeployment,
    endpoint_url: str,
    sources_file: str,
    origin: str = "template.yaml",
) -> dict[str, dict[str, str]]:
    """The env-vars file for SAM CLI: per function (logical id), the values that point it at the stand-in,
    each one only if the function declares the variable (SAM CLI would drop it otherwise)."""
    queues = {worker.function: worker.queue_url for worker in deployment.workers}
    found: dict[str, dict[str, str]] = {}
    for function, declared in declared_variables(template).items():
        if ENDPOINT_VARIABLE not in declared:
            raise ApilakeError(
                f"{origin}: function {function} does not declare {ENDPOINT_VARIABLE} (Globals: Function: "
                "Environment: Variables): sam local invoke would not pass it, and the function would call AWS"
            )
        values = {
            ENDPOINT_VARIABLE: endpoint_url,
            "APILAKE_LAKE_BUCKET": deployment.bucket,
            "APILAKE_STAGE": deployment.stage,
            "APILAKE_SOURCES_FILE": sources_file,
        }
        if function in queues:
            values["APILAKE_QUEUE_URL"] = at_endpoint(queues[function], endpoint_url)
        found[function] = {name: value for name, value in values.items() if name in declared}
    return found


class LocalUp:
    """The stand-in (moto's server) with the deployed-shape resources, and its env-vars file written;
    a context manager: `apilake local up` holds it open until Ctrl-C, tests start and stop it.

    ``sources_file``: the sources the functions read, a path they can open (default: the built layer's
    copy of layers/common/sources.yaml); its sources must be the template's. ``bind``: the address moto
    listens on; ``endpoint_host``: the name the functions reach this machine by.
    """

    def __init__(
        self,
        env_vars_file: Path,
        sources_file: Path | None = None,
        port: int = DEFAULT_PORT,
        bind: str = LOOPBACK,
        endpoint_host: str = DEFAULT_ENDPOINT_HOST,
        secrets: Mapping[str, str] | None = None,
        template_file: Path | None = None,
    ) -> None:
        self.env_vars_file = env_vars_file
        self.sources_file = sources_file
        self.endpoint_host = endpoint_host
        self.secrets = dict(secrets or {})
        self.template_file = template_file or paths.TEMPLATE
        self.aws = LocalAws(bind=bind, port=port)
        self.endpoint_url = ""
        self.env_vars: dict[str, dict[str, str]] = {}

    def __enter__(self) -> LocalUp:
        template = parse_template(self.template_file.read_text(encoding="utf-8"))
        sources_file = self.sources_file or paths.SOURCES
        sources = sorted(source.name for source in load_sources(sources_file).sources)
        if sources != worker_sources(template):
            raise ApilakeError(
                f"{sources_file}: sources {', '.join(sources)}, but {self.template_file.name} has workers for "
                f"{', '.join(worker_sources(template))}: run `make template` (then `sam build`)"
            )
        try:
            self.aws.__enter__()
        except OSError as exc:
            raise ApilakeError(f"local up: {exc.strerror} (--port, --bind)") from exc
        try:
            self._create(template, sources_file)
        except BaseException:
            self.aws.__exit__()
            raise
        return self

    def _create(self, template: dict[str, Any], sources_file: Path) -> None:
        for name, value in self.secrets.items():
            self.aws.client("secretsmanager").create_secret(Name=name, SecretString=value)
        self.deployment = deploy(template, self.aws, sources_file)
        ensure_database(self.aws.client("glue"), self.deployment.database)
        self.endpoint_url = f"http://{self.endpoint_host}:{urlsplit(self.aws.endpoint).port}"
        in_function = str(self.sources_file.resolve()) if self.sources_file else LAYER_SOURCES_FILE
        self.env_vars = env_vars(template, self.deployment, self.endpoint_url, in_function, self.template_file.name)
        self.env_vars_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_vars_file.write_text(json.dumps(self.env_vars, indent=2) + "\n", encoding="utf-8")

    def __exit__(self, *exc: object) -> None:
        self.aws.__exit__(*exc)

    def needs_host_gateway(self) -> bool:
        """Linux's Docker knows no host.docker.internal unless `sam local invoke --add-host` maps it."""
        return self.endpoint_host == DEFAULT_ENDPOINT_HOST and platform.system() == "Linux"

    def describe(self) -> list[str]:
        """What `apilake local up` prints: what runs, what it holds, the commands to try."""
        deployment = self.deployment
        add_host = " --add-host host.docker.internal:host-gateway" if self.needs_host_gateway() else ""
        env = f"--env-vars {self.env_vars_file}"
        lines = [
            f"AWS stand-in (moto's server) at {self.aws.endpoint}, listening on {self.aws.bind}",
            f"created from {self.template_file.name}: bucket {deployment.bucket}; queues, each with its DLQ: "
            + ", ".join(worker.queue_url.rsplit("/", 1)[-1] for worker in deployment.workers)
            + (f"; secrets {', '.join(sorted(self.secrets))}" if self.secrets else ""),
            f"env-vars file for SAM CLI: {self.env_vars_file} ({', '.join(self.env_vars)})",
            f"the functions reach the stand-in at {self.endpoint_url} ({ENDPOINT_VARIABLE})",
        ]
        if self.needs_host_gateway() and self.aws.bind == LOOPBACK:
            lines.append(
                f"  Linux: containers reach this machine at the Docker bridge's address, not {LOOPBACK}: "
                "start with --bind 0.0.0.0 (or the bridge's address, e.g. 172.17.0.1)"
            )
        elif self.aws.bind != LOOPBACK:
            lines.append(
                f"  moto has no authentication: whoever reaches {self.aws.bind} on that port reaches the stand-in"
            )
        fixtures = {"Planner": "planner.json", "Completeness": "completeness.json"}
        fixtures.update({w.function: "worker.json" for w in deployment.workers if w.source == WORKER_EVENT_SOURCE})
        lines += ["", "In another terminal (`sam build` first, and after changing the code or the sources):"]
        lines += [
            f"  sam local invoke {function} -e events/{event} {env}{add_host}"
            for function, event in fixtures.items()
            if function in self.env_vars
        ]
        lines += [
            "Read what they did:",
            f"  AWS_ENDPOINT_URL={self.aws.endpoint} apilake status --bucket {deployment.bucket}",
            "",
            "Ctrl-C stops it; what it holds is gone with it (moto keeps everything in memory).",
        ]
        return lines
