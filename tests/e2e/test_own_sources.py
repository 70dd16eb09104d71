"""A user's own sources, as the README's "Adding a source" says: replace the sources file, `make template`,
the template's checks pass, and the local flow lands every page of the new sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake_dev import paths, query
from apilake_dev.vendors.fake import Dataset, FakeVendor

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
KEY = "their-key"
DATASETS = [Dataset("billing-eu", total=730), Dataset("tickets", total=333)]


def their_sources(base_url: str) -> list[dict[str, Any]]:
    """Two sources unlike the examples: other names, styles, budgets, auth and worker settings."""
    return [
        {
            "name": "billing-eu",
            "base_url": base_url,
            "path": "/offset/billing-eu",
            "records_path": "items",
            "record_id_path": "id",
            "pagination": {"type": "offset", "limit": 50, "total_path": "total"},
            "auth": {"type": "api_key", "secret_name": "vendors/billing"},
            "budget": {"requests_per_second": 40, "max_concurrency": 3},
            "worker": {"timeout_seconds": 120, "memory_mb": 256},
        },
        {
            "name": "tickets",
            "base_url": base_url,
            "path": "/cursor/tickets",
            "params": {"limit": "25"},
            "records_path": "results",
            "record_id_path": "id",
            "pagination": {"type": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more"},
            "auth": {"type": "bearer", "secret_name": "vendors/tickets"},
            "budget": {"requests_per_second": 15, "max_concurrency": 2},
        },
    ]


def copy_project(target: Path) -> Path:
    """The checkout as it is (tracked and new files), without environments and caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = paths.ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(*command: str | Path, project: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APILAKE_ROOT": str(project), "SAM_CLI_TELEMETRY": "0", "AWS_MAX_ATTEMPTS": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(c) for c in command], cwd=project, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_their_sources_pass_the_template_checks_and_land_every_page(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    with FakeVendor(DATASETS, api_key=KEY) as vendor:
        # Given a copy of the project whose sources file holds two sources of the user's own
        sources_file = project / "layers" / "common" / "sources.yaml"
        sources_file.write_text(yaml.safe_dump({"version": 1, "sources": their_sources(vendor.base_url)}))
        # When the template is regenerated, as `make template` does
        generated = run(BIN / "python", "-m", "apilake_dev.template.generate", project=project)
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert "+ BillingEuWorker" in generated.stdout and "+ TicketsWorker" in generated.stdout
        # Then the template tests, sam validate --lint, cfn-lint (translated template) and checkov pass on it
        checks = run(
            BIN / "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/template/test_template.py",
            "tests/template/test_tools.py",
            "-k",
            "not sam_build and not built_layer",
            project=project,
        )
        assert checks.returncode == 0, checks.stdout[-4000:] + checks.stderr[-2000:]
        assert " passed" in checks.stdout and "failed" not in checks.stdout
        # And `apilake run --local` lands every page of both against their (fake) vendors
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"run_id": "their-run", "ingestion_date": "2026-11-26"}))
        home = tmp_path / "home"
        ran = run(
            BIN / "apilake",
            "--home",
            home,
            "run",
            "--local",
            "--sources",
            sources_file,
            "--event",
            event,
            "--visibility-timeout",
            "30",
            f"--secret=vendors/billing={KEY}",
            f"--secret=vendors/tickets={KEY}",
            project=project,
        )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "run their-run (ingestion date 2026-11-26): complete: yes" in ran.stdout
    _, rows = query.run(home / "lake", "SELECT source, count(*), count(DISTINCT id) FROM raw GROUP BY 1 ORDER BY 1")
    assert rows == [(d.name, d.total, d.total) for d in DATASETS]
    landed = sorted(p.name for p in (home / "lake" / "raw" / "source=billing-eu").rglob("*.json.gz"))
    assert len(landed) == 15  # 730 records, 50 a page
