"""`apilake schema infer`: the columns: block inferred from a source's records in the local lake folder, which
the sources file accepts as it is printed."""

from __future__ import annotations

import argparse
import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import parse_sources
from apilake.exceptions import ApilakeError
from apilake.lake import page_key
from apilake_cli.develop import add_schema_commands
from apilake_dev.schema import infer, is_date, is_timestamp, render


def land(lake: Path, source: str, day: str, page: int, records: list[Any]) -> None:
    path = lake / page_key(source, date.fromisoformat(day), "all", page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    land(
        lake,
        "api-x",
        "2026-11-25",
        1,
        [
            {"id": 1, "Name": "a", "price": 1, "ok": True, "day": "2026-11-25", "at": "2026-11-25T10:00:00Z"},
            {"id": 2, "Name": None, "price": 2.5, "ok": False, "day": "2026-11-26", "at": "2026-11-25 11:00:00"},
        ],
    )
    land(
        lake,
        "api-x",
        "2026-11-26",
        1,
        [
            {"id": 3, "tags": ["a"], "meta": {"k": 1}, "mixed": 1, "gone": None, "at": "2026-11-26T10:00:00.123+01:00"},
            {"id": 4, "tags": [], "mixed": "one", "ingestion_date": "x", "user-name": "u", "name": "again"},
        ],
    )
    land(lake, "api-y", "2026-11-26", 1, [{"other": 1}])
    return lake


def test_the_types_are_inferred_from_the_kinds_seen(lake: Path) -> None:
    found = infer(lake, "api-x")
    assert (found.records, found.pages, sorted(found.dates)) == (4, 2, ["2026-11-25", "2026-11-26"])
    assert {name: str(seen.type) for name, seen in found.fields.items()} == {
        "id": "bigint",
        "Name": "string",
        "price": "double",
        "ok": "boolean",
        "day": "date",
        "at": "timestamp",
        "tags": "json",
        "meta": "json",
        "mixed": "string",
        "gone": "string",
        "ingestion_date": "string",
        "user-name": "string",
        "name": "string",
    }


def test_the_block_says_what_it_read_and_comments_what_the_sources_file_would_refuse(lake: Path) -> None:
    text = render(infer(lake, "api-x"))
    assert text.splitlines()[:2] == [
        "# apilake schema infer --source api-x: 4 records in 2 pages (ingestion dates 2026-11-25..2026-11-26)",
        "columns:",
    ]
    assert "  mixed: string  # seen as string, integer" in text
    assert "  gone: string  # null only: no value says its type" in text
    assert "  # ingestion_date: string  # not curated: 'ingestion_date' is the curated table's partition" in text
    assert "  # user-name: string  # not curated: its column name 'user-name' is not [a-z_][a-z0-9_]*" in text
    assert "  # name: string  # not curated: the same column as 'Name' once lowercased" in text


def test_the_block_is_accepted_by_the_sources_file_as_printed(lake: Path) -> None:
    # Given the printed block, pasted under a source
    block = yaml.safe_load(render(infer(lake, "api-x")))
    source = {"name": "api-x", "base_url": "https://a.example", "records_path": "", "pagination": {"type": "single"}}
    # When the sources file is read, then it is valid, with the fields the lake holds
    parsed = parse_sources({"sources": [{**source, **block}]}, "sources.yaml").get("api-x")
    assert parsed.columns is not None and parsed.columns["at"] == "timestamp" and "user-name" not in parsed.columns


def test_the_declared_columns_are_compared(lake: Path) -> None:
    declared = parse_sources(
        {
            "sources": [
                {
                    "name": "api-x",
                    "base_url": "https://a.example",
                    "records_path": "",
                    "pagination": {"type": "single"},
                    "columns": {"id": "string", "price": "double", "removed": "date"},
                }
            ]
        },
        "s",
    ).get("api-x")
    text = render(infer(lake, "api-x"), declared.columns)
    assert "  id: bigint  # declared: string" in text
    assert "  price: double\n" in text
    assert "  tags: json  # not declared" in text
    assert text.endswith("  # removed: date  # declared, never seen")


@pytest.mark.parametrize(
    ("text", "day", "timestamp"),
    [
        ("2026-11-26", True, False),
        ("2026-13-01", False, False),
        ("2026-11-26T10:00:00Z", False, True),
        ("2026-11-26 10:00", False, True),
        ("2026-11-26T10:00:00.5-05:00", False, True),
        ("20261126T100000Z", False, False),
        ("yesterday", False, False),
    ],
)
def test_dates_and_timestamps_by_their_text(text: str, day: bool, timestamp: bool) -> None:
    assert (is_date(text), is_timestamp(text)) == (day, timestamp)


def run_command(argv: list[str], home: Path) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=home)
    add_schema_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_the_command_prints_the_block_of_the_home_s_lake(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {
                        "name": "api-y",
                        "base_url": "https://a.example",
                        "records_path": "",
                        "pagination": {"type": "single"},
                        "columns": {"other": "string"},
                    }
                ]
            }
        )
    )
    assert run_command(["schema", "infer", "--source", "api-y", "--sources", str(sources)], tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["columns:", "  other: bigint  # declared: string"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("api-z", "schema infer: no landed pages of 'api-z' in "),
        ("api-e", "schema infer: the landed pages of 'api-e' in "),
        ("api-s", "schema infer: the records of 'api-s' are not JSON objects"),
        ("api-b", "not gzip NDJSON"),
    ],
)
def test_a_lake_without_usable_records_is_an_error_naming_it(lake: Path, source: str, message: str) -> None:
    land(lake, "api-e", "2026-11-26", 1, [])
    land(lake, "api-s", "2026-11-26", 1, ["text", 1])
    bad = lake / page_key("api-b", date(2026, 11, 26), "all", 1)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not gzip")
    with pytest.raises(ApilakeError, match=message):
        render(infer(lake, source))
