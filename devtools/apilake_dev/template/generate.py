"""template.yaml's per-source region, generated from the sources file; the rest of the file is yours.

template.yaml is written and edited by hand, except one region between two marker lines: every
source's queue, DLQ, worker, role, log group and alarms (and, with ``columns``, its Glue tables), the alarm
over every source's (the dashboard shows it), and the planner's access to the queues.
``make template`` renders that region from the sources file through ``sources.yaml.j2`` (beside
this module) and leaves every other line as it was. ``--check`` only says whether it is current.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml

from apilake.auth_config import NoAuth
from apilake.config import Schedule, Source, SourcesFile, load_sources
from apilake.exceptions import ConfigError
from apilake.lake import source_prefix
from apilake.ledger import source_ledger_prefix
from apilake.names import pascal
from apilake.pagination import paginator_for
from apilake.parent_config import children_of
from apilake_dev import paths
from apilake_dev.template.catalog import tables_context, view_queries

BEGIN = "  # >>> apilake sources: generated from the sources file by `make template`; edit that file, not this region"
END = "  # <<< apilake sources"
VISIBILITY_PER_TIMEOUT = 6  # AWS's advice for SQS event sources: visibility timeout >= 6 x the function's timeout
ALARM_RULE_MAX_CHARS = 10240  # CloudWatch's limit on a composite alarm's rule
BLOCK = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
).get_template("sources.yaml.j2")


def secret_arn(source: Source) -> str | None:
    """The ARN pattern of the source's secret (Secrets Manager appends six random characters)."""
    if isinstance(source.auth, NoAuth):
        return None
    name = source.auth.secret_name  # every other kind of auth reads one secret
    return f"arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{name}-??????"


def _alarm(
    ident: str,
    says: str,
    namespace: str,
    metric: str,
    dimensions: list[tuple[str, str]],
    *,
    statistic: str = "Maximum",
    period: int = 60,
    threshold: int | str = 0,
    at_least: bool = False,
) -> dict[str, Any]:
    """One of a source's alarms, as the block writes it (``at_least``: at the threshold, not only above)."""
    return {
        "id": ident,
        "says": says,
        "namespace": namespace,
        "metric": metric,
        "dimensions": dimensions,
        "statistic": statistic,
        "period": period,
        "threshold": threshold,
        "comparison": "GreaterThanOrEqualToThreshold" if at_least else "GreaterThanThreshold",
    }


def child_queues(children: Sequence[Source]) -> str:
    """A parent's worker's ``APILAKE_CHILD_QUEUE_URLS``: a JSON object, each child's queue URL a ``${...}`` of
    ``!Sub`` (empty without children)."""
    if not children:
        return ""
    return json.dumps({child.name: f"${{{pascal(child.name)}Queue}}" for child in children})


def source_context(source: Source, sources: SourcesFile | None = None) -> dict[str, Any]:
    """What the region's block needs to know about one source (``sources``: the file, for its children)."""
    ident, worker = pascal(source.name), source.worker
    children = children_of(sources.sources, source.name) if sources is not None else []
    return {
        "name": source.name,
        "id": ident,
        # A parent: its children's queues, which its worker sends their work to (apilake.children)
        "child_ids": [pascal(child.name) for child in children],
        "child_queues": child_queues(children),
        "raw_prefix": source_prefix(source.name),
        "ledger_prefix": source_ledger_prefix(source.name),
        "secret_arn": secret_arn(source),
        "timeout": worker.timeout_seconds,
        "visibility_timeout": VISIBILITY_PER_TIMEOUT * worker.timeout_seconds,
        "memory": worker.memory_mb or "!Ref WorkerMemorySize",
        "batch_size": worker.batch_size or "!Ref WorkerBatchSize",
        "max_receive_count": worker.max_receive_count,
        "concurrency": source.budget.max_concurrency,
        "views": view_queries(source),  # the named queries that create its views (none without an id or columns)
        "tables": tables_context(source),  # None without columns: raw only
        "alarms": [
            _alarm(
                "DlqDepthAlarm",
                "messages in the DLQ (pages that failed for good)",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                [("QueueName", f"!GetAtt {ident}DeadLetterQueue.QueueName")],
            ),
            _alarm(
                "QueueAgeAlarm",
                "oldest message waits too long (run not finishing)",
                "AWS/SQS",
                "ApproximateAgeOfOldestMessage",
                [("QueueName", f"!GetAtt {ident}Queue.QueueName")],
                period=300,
                threshold="!Ref QueueAgeAlarmSeconds",
            ),
            *(
                _alarm(
                    f"Worker{metric}Alarm",
                    f"worker invocations {what}",
                    "AWS/Lambda",
                    metric,
                    [("FunctionName", f"!Ref {ident}Worker")],
                    statistic="Sum",
                    period=300,
                )
                for metric, what in (("Errors", "crashed"), ("Throttles", "throttled"))
            ),
            _alarm(
                "FailuresAlarm",
                "pages failing (retried or to the DLQ)",
                "!Sub apilake-${Stage}",
                "failures_total",
                [("source", f"'{source.name}'"), ("service", "apilake")],
                statistic="Sum",
                period=900,
                threshold="!Ref FailureAlarmThreshold",
                at_least=True,
            ),
        ],
    }


def check_sources_alarm_rule(names: Sequence[str], stage: str = "x" * 10) -> None:
    """``SourcesAlarm`` is in alarm when a source's composite alarm (``apilake-<stage>-source-<name>``) is: refuse
    sources whose rule would be longer than CloudWatch allows with the longest stage name."""
    rule = " OR ".join(f'ALARM("apilake-{stage}-source-{name}")' for name in names)
    if len(rule) > ALARM_RULE_MAX_CHARS:
        raise ConfigError(
            f"{len(names)} sources make the SourcesAlarm rule up to {len(rule)} characters long, over "
            f"CloudWatch's {ALARM_RULE_MAX_CHARS} for a composite alarm: split the sources between two stacks"
        )


def schedule_key(schedule: Schedule) -> str:
    """Eight hex digits for an expression and time zone: the schedule's name and its runs' ids end with them."""
    return hashlib.sha256(f"{schedule.expression} {schedule.timezone}".encode()).hexdigest()[:8]


def schedules_context(sources: SourcesFile) -> list[dict[str, Any]]:
    """One schedule per distinct expression and time zone among the sources' own, with the sources it plans
    (in the file's order); sources without one follow the planner's default schedule (template.yaml)."""
    # By expression and zone only: the rest of the block (complete_within_minutes) is the source's own.
    grouped: dict[tuple[str, str], tuple[Schedule, list[str]]] = {}
    for source in sources.sources:
        if source.schedule is not None:
            when = (source.schedule.expression, source.schedule.timezone)
            grouped.setdefault(when, (source.schedule, []))[1].append(source.name)
    schedules: list[dict[str, Any]] = []
    keys: dict[str, tuple[str, str]] = {}
    for when, (schedule, names) in grouped.items():
        key = schedule_key(schedule)
        if keys.setdefault(key, when) != when:
            raise ConfigError(f"schedules {keys[key]} and {when} share the key {key}: write one another way")
        # The default schedule's event (template.yaml, Planner's Nightly) plus the schedule's key and sources.
        event = {
            "source": "aws.scheduler",
            "detail-type": "Scheduled Event",
            "id": "<aws.scheduler.execution-id>",
            "time": "<aws.scheduler.scheduled-time>",
            "resources": ["<aws.scheduler.schedule-arn>"],
            "detail": {"schedule": key, "sources": names},
        }
        schedules.append(
            {
                "id": f"PlannerSchedule{key}",
                "key": key,
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "sources": names,
                "input": json.dumps(event),
            }
        )
    return schedules


def render_region(sources: SourcesFile) -> str:
    """The region's lines, markers included."""
    check_sources_alarm_rule([s.name for s in sources.sources])
    probed = [arn for s in sources.sources if paginator_for(s).needs_probe and (arn := secret_arn(s))]
    body = BLOCK.render(
        sources=[source_context(s, sources) for s in sources.sources],
        probed_secrets=probed,
        schedules=schedules_context(sources),
    )
    return f"{BEGIN}\n{body.strip(chr(10))}\n{END}\n"


def splice(template_text: str, region: str, origin: str = "template.yaml") -> str:
    """``template_text`` with its region replaced by ``region``; every other line kept as it is."""
    lines = template_text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise ConfigError(
            f"{origin}: expected one generated region, a line {BEGIN.strip()!r} and later a line {END.strip()!r} "
            f"(found {len(begins)} and {len(ends)}); put them back at the end of Resources and run `make template`"
        )
    return "".join(lines[: begins[0]]) + region + "".join(lines[ends[0] + 1 :])


def template_text_for(sources_file: Path, template_file: Path | None = None) -> str:
    """template.yaml as it would be for ``sources_file`` (the local run deploys this, in memory)."""
    template_file = template_file or paths.TEMPLATE
    region = render_region(load_sources(sources_file))
    return splice(template_file.read_text(encoding="utf-8"), region, origin=str(template_file))


class _TemplateLoader(yaml.SafeLoader):
    """YAML as CloudFormation reads it: ``!Ref X`` is ``{"Ref": "X"}``, ``!GetAtt A.B`` is
    ``{"Fn::GetAtt": ["A", "B"]}``, ``!Sub ...`` is ``{"Fn::Sub": ...}`` (as SAM CLI's yamlhelper does,
    without changing PyYAML's global SafeLoader the way that module does)."""


def _intrinsic(loader: _TemplateLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def parse_template(text: str) -> dict[str, Any]:
    """The template as CloudFormation reads it, short-form intrinsics in their long forms."""
    parsed: dict[str, Any] = yaml.load(text, Loader=_TemplateLoader)  # a SafeLoader subclass
    return parsed


def resource_changes(old: str, new: str) -> list[str]:
    """What regenerating changed, one line per resource: ``+ ApiEQueue``, ``- ApiDQueue``, ``~ ApiAWorker``."""
    before, after = parse_template(old)["Resources"], parse_template(new)["Resources"]
    lines = [f"+ {name}" for name in after if name not in before]
    lines += [f"- {name}" for name in before if name not in after]
    lines += [f"~ {name}" for name in after if name in before and after[name] != before[name]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apilake template", description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=paths.SOURCES, help="the sources file")
    parser.add_argument("--template", type=Path, default=paths.TEMPLATE, help="the template to update")
    parser.add_argument("--check", action="store_true", help="only say whether the region is current (exit 1 if not)")
    parser.add_argument("--diff", action="store_true", help="print the region's changes line by line")
    args = parser.parse_args(argv)
    if not args.template.is_file():  # the operator install has the generator but no checkout to generate into
        where = "pip install -e '.[dev]' from a checkout" if args.template == paths.TEMPLATE else "--template"
        print(f"apilake template needs the dev install: {where} (no template at {args.template})", file=sys.stderr)
        return 2
    old = args.template.read_text(encoding="utf-8")
    new = template_text_for(args.sources, args.template)
    changed = resource_changes(old, new)
    if args.diff or (args.check and old != new):
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "template.yaml", "new"))
    if args.check:
        if old != new:
            print(f"{args.template.name} is out of date with {args.sources.name}: run `make template`", file=sys.stderr)
            return 1
        print(f"{args.template.name} is current with {args.sources.name}")
        return 0
    if old == new:
        names = ", ".join(s.name for s in load_sources(args.sources).sources)
        print(f"{args.template.name}: no change (sources: {names})")
        return 0
    args.template.write_text(new, encoding="utf-8")
    print(f"{args.template.name}: region regenerated from {args.sources.name}; {len(changed)} resource(s) changed")
    for line in changed:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
