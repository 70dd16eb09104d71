"""The CLI's small commands: sources validate, template --check, status without a lake."""

from __future__ import annotations

from pathlib import Path

import pytest

from apilake_cli.main import main


def test_sources_validate_describes_each_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources", "validate"]) == 0
    out = capsys.readouterr().out
    assert "api-b: cursor pagination, none sharding, auth bearer, 5.0 req/s over 2 workers" in out
    assert "4 sources, valid" in out


def test_sources_validate_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "sources.yaml"
    bad.write_text(
        "version: 1\nsources:\n  - name: x\n    base_url: https://x.example.com\n    pagination: {type: single}\n"
    )
    assert main(["sources", "validate", str(bad)]) == 2
    assert "sources.yaml: source 'x': records_path: Field required" in capsys.readouterr().err


def test_template_check_passes_on_the_committed_template() -> None:
    assert main(["template", "--check"]) == 0


def test_status_without_a_lake_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "status"]) == 2
    assert "run `apilake demo` or `apilake run --local` first" in capsys.readouterr().err
