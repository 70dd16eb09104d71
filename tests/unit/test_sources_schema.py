"""The JSON Schema of the sources file (`apilake sources schema`): current, valid 2020-12, agrees with the models."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from apilake.config import parse_sources
from apilake.exceptions import ConfigError
from apilake_cli.main import main
from apilake_cli.sources_schema import DIALECT, schema_text, sources_schema
from apilake_dev import paths
from tests.unit.test_config import VALID

SCHEMA_FILE = paths.ROOT / "schema" / "sources.schema.json"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S+)$", re.MULTILINE)


def sources_files() -> list[Path]:
    """Every sources file of the checkout: a YAML file under examples/, tests/ or layers/ with a top-level
    ``sources:`` list."""
    found = []
    for folder in (paths.EXAMPLES, paths.ROOT / "tests", paths.LAYER):
        for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(document, dict) and isinstance(document.get("sources"), list):
                found.append(path)
    return found


def validator() -> Any:
    return Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def messages(document: Any) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def test_the_checked_in_schema_is_what_the_command_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given the models as they are, when the command writes the schema (to a file and to stdout)
    written = tmp_path / "sources.schema.json"
    assert main(["sources", "schema", "--output", str(written)]) == 0
    assert main(["sources", "schema"]) == 0
    # then the checked-in copy is the same text (regenerate: apilake sources schema --output schema/sources.schema.json)
    assert written.read_text(encoding="utf-8") == schema_text() == capsys.readouterr().out
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()


def test_the_schema_is_a_draft_2020_12_schema_with_descriptions() -> None:
    schema = sources_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert "Bearer" in schema["$defs"]["BearerAuth"]["description"]  # the model's docstring


def objects(schema: Any) -> Iterator[dict[str, Any]]:
    """Every sub-schema of ``schema``."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from objects(value)


def test_every_mapping_of_the_file_refuses_unknown_keys_as_the_models_do() -> None:
    with_fields = [s for s in objects(sources_schema()) if "properties" in s]
    assert len(with_fields) > 10
    assert all(s.get("additionalProperties") is False for s in with_fields)


def test_each_tagged_union_offers_its_types_for_completion() -> None:
    # An editor completes `type:` from the members' const values: one member per tag, each fixing its type
    schema = sources_schema()
    unions = [s for s in objects(schema) if "discriminator" in s]
    assert {"page_number", "offset", "cursor", "next_url", "link_header", "single"} in [
        set(u["discriminator"]["mapping"]) for u in unions
    ]
    for union in unions:
        tags = set()
        for member in union["oneOf"]:
            definition = schema["$defs"][member["$ref"].rsplit("/", 1)[-1]]
            tags.add(definition["properties"][union["discriminator"]["propertyName"]]["const"])
            assert union["discriminator"]["propertyName"] in definition["required"]
        assert tags == set(union["discriminator"]["mapping"])


def test_the_checkout_has_sources_files_to_check() -> None:
    assert {paths.EXAMPLE_SOURCES, paths.SOURCES} <= set(sources_files())


@pytest.mark.parametrize("path", sources_files(), ids=lambda p: str(p.relative_to(paths.ROOT)))
def test_every_sources_file_of_the_checkout_matches_the_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert messages(yaml.safe_load(text)) == []
    modeline = MODELINE.search(text)  # an editor finds the schema through it
    assert modeline is None or (path.parent / modeline["path"]).resolve() == SCHEMA_FILE


def test_the_shipped_sources_files_name_the_schema_for_editors() -> None:
    for path in (paths.EXAMPLE_SOURCES, paths.SOURCES):
        assert MODELINE.search(path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("raw", VALID)
def test_what_the_models_accept_the_schema_accepts(raw: dict[str, Any]) -> None:
    assert messages(raw) == []


BASE: dict[str, Any] = {
    "name": "api-x",
    "base_url": "https://api.example.com",
    "records_path": "data",
    "pagination": {"type": "single"},
}


def with_source(**changes: Any) -> dict[str, Any]:
    source = copy.deepcopy(BASE)
    source.update(changes)
    return {"version": 1, "sources": [{key: value for key, value in source.items() if value is not None}]}


REFUSED = [
    pytest.param(with_source(pagintion={"type": "single"}), "'pagintion' was unexpected", id="misspelt field"),
    pytest.param(with_source(records_path=None), "'records_path' is a required property", id="missing field"),
    pytest.param(with_source(pagination={"type": "cursr"}), "is not valid under any", id="unknown type"),
    pytest.param(
        with_source(pagination={"type": "page_number", "page_sise": 10}), "is not valid under any", id="misspelt in"
    ),
    pytest.param(
        with_source(pagination={"type": "page_number", "page_size": 0}), "is not valid under any", id="out of range"
    ),
    pytest.param(with_source(name="API X"), "does not match", id="a name with capitals"),
    pytest.param(with_source(params={"ids": [1, 2]}), "is not valid under any", id="a list as a param"),
    pytest.param(with_source(columns={"id": "bigitn"}), "is not valid under any", id="unknown column type"),
    pytest.param(with_source(budget={"max_concurrency": 1}), "less than the minimum", id="one worker"),
    pytest.param({"version": 2, "sources": [BASE]}, "1 was expected", id="version"),
    pytest.param({"version": 1, "sources": []}, "should be non-empty", id="no source"),
]


@pytest.mark.parametrize(("document", "expected"), REFUSED)
def test_what_the_schema_refuses_the_models_refuse(document: dict[str, Any], expected: str) -> None:
    # given a document the schema refuses, then the loader refuses it too: the schema never says yes to a bad file
    found = messages(document)
    assert any(expected in message for message in found), found
    with pytest.raises(ConfigError):
        parse_sources(document, "sources.yaml")
