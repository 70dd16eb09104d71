"""`apilake`: the command line for people.

Operator commands, for a deployed stack (`--stack-name`, `--region`, `--profile`; `--json` for scripts)
or the local lake folder, with the runtime package and boto3 only (`pip install .`): run, backfill,
status, dlq peek, redrive, query --athena, report, sources validate. Dev commands, on this machine
(`pip install -e '.[dev]'` from a checkout): demo, run --local, query (DuckDB), soak, template.
Never shipped in the Lambda layer. Exit codes: 0 done, 1 not done, 2 bad input or AWS error, 3 timed
out (each command's --help says what they mean for it; docs/operating.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apilake_cli.commands import COMMANDS
from apilake_cli.exits import Exit

DEFAULT_HOME = Path(".apilake")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    # After the parse: --help and a usage error need none of these
    from botocore.exceptions import BotoCoreError, ClientError

    from apilake.exceptions import ApilakeError

    try:
        code: int = args.func(args)
        return code
    except (ApilakeError, FileNotFoundError) as exc:
        return fail(args, str(exc))
    except (BotoCoreError, ClientError) as exc:
        return fail(args, f"AWS: {exc}")


def fail(args: argparse.Namespace, message: str) -> int:
    """Exit 2 with the message on stderr; with --json, also as the command's document: ``{"error": ...}``."""
    from apilake_cli.output import print_json

    print(f"apilake: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": message})
    return Exit.ERROR


class _Version(argparse.Action):
    """--version, the installed distribution's read only when asked for (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import version

        print(f"{parser.prog} {version('apilake')}")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line. Given ``argv``, only the command it runs is built whole, its module imported (each module
    imports what its commands need: boto3, pydantic, the runner...); every other command is there by its name and
    summary (``apilake --help`` lists them all). Without ``argv``, every command whole."""
    wanted = wanted_commands(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="apilake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state: lake folder, logs, reports")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, summary, add in COMMANDS:
        if wanted is None or wanted[:1] == [name]:
            add(commands, None if wanted is None else wanted[1:])
        else:
            commands.add_parser(name, help=summary)
    return parser


def wanted_commands(argv: Sequence[str]) -> list[str]:
    """The command (and subcommand) ``argv`` names: its first words that are not options (nor --home's value)."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word.startswith("-"):
            # --home's value is the next word (argparse takes --ho, --hom too); --home=X holds its own
            skip = not words and len(word) > 3 and "--home".startswith(word)
        else:
            words.append(word)
            if len(words) == 2:
                break
    return words


if __name__ == "__main__":
    raise SystemExit(main())
