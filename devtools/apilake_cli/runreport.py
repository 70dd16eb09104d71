"""`apilake report`: where a run's report is, and the report built now when none is stored.

A stored report is the local lake's (written by `apilake demo` and `apilake run --local`), or the deployed
bucket's (written by the completeness check), downloaded to ``<home>/reports/<run>/``. Without one (a run
the check has not looked at yet), or with ``--rebuild``, the report is built from the ledger
(:func:`apilake.report.build_report`, with the stack's DLQ depths) into ``<home>/reports/<run>/``: never
into the bucket, where an operator may only have read access.
"""

from __future__ import annotations

import argparse
import webbrowser
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import ClientError

from apilake.config import SourcesFile
from apilake.lake import is_not_found
from apilake.ledger import Ledger, RunManifest
from apilake.report import build_report, render_html, report_keys
from apilake_cli.exits import Exit
from apilake_cli.lakefolder import local_lake
from apilake_cli.operate import choose_run, ledger_of, pinned_sources
from apilake_cli.output import print_json
from apilake_cli.stack import Stack


def cmd_report(args: argparse.Namespace) -> int:
    ledger, stack = ledger_of(args)
    manifest = choose_run(ledger, args.run)
    run_id = manifest.run_id
    folder = args.home / "reports" / run_id
    local = stack is None and not args.bucket
    if args.rebuild:
        stored = None
    else:
        stored = _stored_locally(local_lake(args), run_id) if local else _download(ledger, run_id, folder)
    if stored is None:
        paths, where = _build(ledger, stack, manifest, folder, pinned_sources(args.sources)), "built"
    else:
        paths, where = stored, "local" if local else "bucket"
    json_path, html_path = paths
    if args.json:
        print_json({"run_id": run_id, "from": where, "json": str(json_path), "html": str(html_path)})
    elif where == "built":
        why = "--rebuild" if args.rebuild else "no report stored yet"
        print(f"run {run_id}: report built now from the ledger ({why}): {html_path}\n  data {json_path}")
    else:
        print(f"run {run_id}: report {html_path}\n  data {json_path}")
    if args.open:
        webbrowser.open(html_path.resolve().as_uri())
    return Exit.DONE


def _stored_locally(lake: Path, run_id: str) -> tuple[Path, Path] | None:
    """The report's files in the lake folder, if both are there."""
    json_path, html_path = (lake / key for key in report_keys(run_id))
    return (json_path, html_path) if json_path.is_file() and html_path.is_file() else None


def _download(ledger: Ledger, run_id: str, folder: Path) -> tuple[Path, Path] | None:
    """The report's files downloaded from the bucket into ``folder``; None unless both are stored."""
    json_key, html_key = report_keys(run_id)
    json_body, html_body = _get(ledger, json_key), _get(ledger, html_key)
    if json_body is None or html_body is None:
        return None
    json_path, html_path = _files(folder)
    json_path.write_bytes(json_body)
    html_path.write_bytes(html_body)
    return json_path, html_path


def _files(folder: Path) -> tuple[Path, Path]:
    """The report's files under ``<home>/reports/<run>/`` (the folder made)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "report.json", folder / "report.html"


def _get(ledger: Ledger, key: str) -> bytes | None:
    try:
        body: bytes = ledger.client.get_object(Bucket=ledger.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return body


def _build(
    ledger: Ledger, stack: Stack | None, manifest: RunManifest, folder: Path, sources: SourcesFile | None
) -> tuple[Path, Path]:
    """The report built from the ledger now (DLQ depths: the stack's, where its sources' DLQs still exist)."""
    depths = None
    if stack is not None:
        depths = {s: n for s, n in stack.dlq_depths(list(manifest.sources)).items() if n is not None}
    report = build_report(ledger, manifest, depths, datetime.now(UTC), sources)
    json_path, html_path = _files(folder)
    json_path.write_text(report.model_dump_json(indent=2))
    html_path.write_text(render_html(report))
    return json_path, html_path
