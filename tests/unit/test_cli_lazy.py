"""`apilake` imports only the module of the command it runs: the others are listed by name and summary, the same
as when they are built whole; every command's --help still works."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from apilake_cli.commands import COMMANDS
from apilake_cli.main import build_parser, main, wanted_commands

# The modules of the commands (each imports boto3, pydantic, the runner or the dev tools, as its commands need).
COMMAND_MODULES = {
    "apilake_cli.operate",
    "apilake_cli.runs",
    "apilake_cli.runreport",
    "apilake_cli.curate",
    "apilake_cli.ingest",
    "apilake_cli.try_source",
    "apilake_cli.sources_schema",
    "apilake_cli.develop",
    "apilake_cli.athena",
}
EVERY_HELP = [[name] for name, _, _ in COMMANDS] + [
    ["dlq", "peek"],
    ["sources", "validate"],
    ["sources", "try"],
    ["sources", "schema"],
    ["local", "up"],
    ["schema", "infer"],
]


def listed(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """A parser's commands as `--help` lists them: name -> summary (nested groups too, as 'sources try')."""
    found: dict[str, str | None] = {}
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        assert isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions:
            found[choice.dest] = choice.help
            sub = action.choices[choice.dest]
            found |= {f"{choice.dest} {name}": text for name, text in listed(sub).items()}
    return found


def imported_by(argv: list[str]) -> set[str]:
    """The command modules a fresh interpreter imports to run ``apilake <argv>``."""
    code = (
        "import json, sys\nfrom apilake_cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {sorted(COMMAND_MODULES)!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return set(found)


def test_the_commands_are_listed_alike_built_whole_or_by_name() -> None:
    whole = listed(build_parser())
    by_name = listed(build_parser(["--help"]))
    assert {name: whole[name] for name in by_name} == by_name
    assert sorted(name for name in by_name if " " not in name) == sorted(name for name, _, _ in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["--help"], set()),
        (["--version"], set()),
        (["status", "--help"], {"apilake_cli.operate", "apilake_cli.athena"}),  # operate's own imports
        (["ingest", "--help"], {"apilake_cli.ingest"}),
        (["sources", "schema", "--help"], {"apilake_cli.sources_schema"}),
        (["--home", "status", "sources", "try", "--help"], {"apilake_cli.try_source", "apilake_cli.develop"}),
    ],
)
def test_a_command_imports_its_own_module_only(argv: list[str], modules: set[str]) -> None:
    assert imported_by(argv) == modules


@pytest.mark.parametrize("argv", EVERY_HELP, ids=[" ".join(a) for a in EVERY_HELP])
def test_every_commands_help_is_its_own(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: apilake {' '.join(argv)} ")


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["status", "--run", "r1"], ["status", "r1"]),
        (["--home", "ingest", "status"], ["status"]),  # --home's value is not the command
        (["--hom", "x", "sources", "try", "a"], ["sources", "try"]),
        (["--home=x", "report"], ["report"]),
        (["--json"], []),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option(argv: list[str], wanted: list[str]) -> None:
    assert wanted_commands(argv) == wanted


def test_the_checkout_sources_file_is_the_one_the_commands_default_to() -> None:
    from apilake_cli import commands, ingest, operate

    assert commands.CHECKOUT_SOURCES_FILE == operate.SOURCES_FILE == ingest.CHECKOUT_SOURCES
