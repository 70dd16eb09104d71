"""Errors in the sources file say where: file:line:column, source, field, and "did you mean" for a misspelt name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError, model_validator

from apilake.config import SourcesFile, load_sources, parse_sources
from apilake.config_errors import document_path, model_at, read_yaml
from apilake.exceptions import ConfigError, describe_validation_error, field_error
from apilake.pagination_config import CursorPagination

HEAD = "version: 1\nsources:\n  - name: api-x\n    base_url: https://api.example.com\n    records_path: data\n"


def source_with(*lines: str) -> str:
    """The sources file of one source, ``lines`` (its other keys) from line 6, column 5."""
    return HEAD + "".join(f"    {line}\n" for line in lines)


SINGLE = "pagination: {type: single}"
WHERE = [
    pytest.param(
        source_with("pagintion: {type: single}"),
        "sources.yaml:6:5: source 'api-x': pagintion: Extra inputs are not permitted (did you mean 'pagination'?)",
        id="misspelt field: at the key, with the closest field",
    ),
    pytest.param(
        source_with("pagintion: {type: single}"),
        "sources.yaml:3:5: source 'api-x': pagination: Field required",
        id="missing field: at the mapping that lacks it",
    ),
    pytest.param(
        source_with("pagination:", "  type: page_number", "  page_sise: 10"),
        "sources.yaml:8:7: source 'api-x': pagination.page_sise: Extra inputs are not permitted "
        "(did you mean 'page_size'?)",
        id="misspelt field of a pagination type",
    ),
    pytest.param(
        source_with("pagination:", "  type: page_number", "  page_size: 0"),
        "sources.yaml:8:18: source 'api-x': pagination.page_size: Input should be greater than or equal to 1",
        id="wrong value: at the value",
    ),
    pytest.param(
        source_with("pagination: {type: cursr, cursor_path: next}"),
        "sources.yaml:6:24: source 'api-x': pagination.type: Input tag 'cursr' found using 'type' does not match any "
        "of the expected tags: 'page_number', 'offset', 'cursor',",
        id="misspelt type: at the type's value",
    ),
    pytest.param(
        source_with("pagination: {type: cursr, cursor_path: next}"),
        "(did you mean 'cursor'?)",
        id="misspelt type: the closest type",
    ),
    pytest.param(
        source_with("pagination: {type: cursor, cursor_from: last_recrd, cursor_field: id}"),
        "sources.yaml:6:45: source 'api-x': pagination.cursor_from: Input should be 'body', 'last_record' or "
        "'first_record' (did you mean 'last_record'?)",
        id="misspelt literal",
    ),
    pytest.param(
        source_with(SINGLE, "columns: {id: bigitn}"),
        "sources.yaml:7:19: source 'api-x': columns.id: Input should be 'string', 'bigint', 'double', 'boolean', "
        "'timestamp', 'date' or 'json' (did you mean 'bigint'?)",
        id="misspelt enum value",
    ),
    pytest.param(
        source_with(SINGLE, "budget: {max_concurrency: 2, requests_per_sec: 5}"),
        "sources.yaml:7:34: source 'api-x': budget.requests_per_sec: Extra inputs are not permitted "
        "(did you mean 'requests_per_second'?)",
        id="misspelt key in a flow mapping",
    ),
    pytest.param(
        source_with("pagination: {type: Cursor, cursor_path: next}"),
        "(did you mean 'cursor'?)",
        id="a type in another case: the type",
    ),
    pytest.param(
        source_with(SINGLE, "columns: {id: BigInt}"),
        "columns.id: Input should be 'string', 'bigint', 'double', 'boolean', 'timestamp', 'date' or 'json' "
        "(did you mean 'bigint'?)",
        id="an enum value in another case",
    ),
    pytest.param(
        source_with(SINGLE, "method: PSOT"),
        "sources.yaml:7:13: source 'api-x': method: Input should be 'GET' or 'POST' (did you mean 'POST'?)",
        id="a misspelt method",
    ),
    pytest.param(
        source_with(SINGLE, "method: psot"),
        "method: Input should be 'GET' or 'POST' (did you mean 'POST'?)",
        id="a misspelt method in lower case",
    ),
    pytest.param(
        source_with(SINGLE, "colour: blue"),
        "sources.yaml:7:5: source 'api-x': colour: Extra inputs are not permitted\n",
        id="unknown field, nothing close: no suggestion",
    ),
    pytest.param(
        source_with("pagination:", "  type: cursor", "  has_more_path: more"),
        "sources.yaml:7:7: source 'api-x': pagination.cursor_path: Value error, give cursor_path (where the body "
        "holds the next cursor)",
        id="a model's check across fields: at the field it names, the mapping when the field is missing",
    ),
    pytest.param(
        source_with("pagination:", "  type: cursor", "  cursor_path: next", "  cursor_field: id"),
        "sources.yaml:9:21: source 'api-x': pagination.cursor_field: Value error, cursor_field is the record's field",
        id="a model's check across fields: at the field it names",
    ),
    pytest.param(
        source_with("pagination: {type: page_number, total_path: a, total_pages_path: b}"),
        "sources.yaml:6:70: source 'api-x': pagination.total_pages_path: Value error, give total_path or "
        "total_pages_path, not both",
        id="two totals: at the second",
    ),
    pytest.param(
        source_with(SINGLE, "columns: {name: string}", "record_id_path: id"),
        "sources.yaml:8:21: source 'api-x': record_id_path: Value error, declare 'id' in columns",
        id="record id not a column",
    ),
    pytest.param(
        source_with(
            SINGLE,
            "sharding: {type: daily, start_param: from, end_param: to}",
            "incremental:",
            "  cursor_path: updated_at",
            "  param: since",
            "  initial_value: '2026-01-01'",
        ),
        "sources.yaml:8:5: source 'api-x': incremental: Value error, a source fetched by date shards cannot also be",
        id="a check across blocks: at the block's key",
    ),
    pytest.param(
        source_with(SINGLE, "incremental: {cursor_path: u, param: since, initial_value: soon}"),
        "sources.yaml:7:64: source 'api-x': incremental.initial_value: Value error, not an ISO 8601 timestamp: 'soon'",
        id="a model's check of one field",
    ),
    pytest.param(
        source_with("pagination: {page_size: 5}"),
        "sources.yaml:6:17: source 'api-x': pagination.type: Field required: one of 'page_number', 'offset', "
        "'cursor', 'next_url', 'link_header', 'single'\n",
        id="no pagination type: at the mapping that lacks it, the types listed",
    ),
    pytest.param(
        source_with(SINGLE, "auth:", "  secret_name: apilake/vendor"),
        "sources.yaml:8:7: source 'api-x': auth.type: Field required: one of 'none', 'api_key', 'bearer', "
        "'http_basic', 'oauth2_client_credentials', 'headers_from_secret'\n",
        id="no auth type",
    ),
    pytest.param(
        source_with(SINGLE, "sharding: {start_param: from, end_param: to}"),
        "sources.yaml:7:15: source 'api-x': sharding.type: Field required: one of 'none', 'daily'\n",
        id="no sharding type",
    ),
    pytest.param(
        source_with(SINGLE, "auth: {type: oauth2, token_url: 'https://a.example.com/token', secret_name: s}"),
        "sources.yaml:7:18: source 'api-x': auth.type: Input tag 'oauth2' found using 'type' does not match any of "
        "the expected tags: 'none', 'api_key', 'bearer', 'http_basic', 'oauth2_client_credentials', "
        "'headers_from_secret'\n",
        id="unknown auth type: the types listed",
    ),
    pytest.param(
        source_with("pagination: single"),
        "sources.yaml:6:17: source 'api-x': pagination: Input should be a valid dictionary or object to extract "
        "fields from (write {type: single})\n",
        id="a type alone instead of the mapping",
    ),
    pytest.param(
        source_with("sharding: weekly", SINGLE),
        "sources.yaml:6:15: source 'api-x': sharding: Input should be a valid dictionary or object to extract "
        "fields from (a mapping with type: one of 'none', 'daily')\n",
        id="a scalar instead of the mapping",
    ),
    pytest.param(
        "version: 1\nbudget_groups: {stripe: {requests_per_second: 25}}\nsources:\n  - name: api-x\n"
        "    base_url: https://api.example.com\n    records_path: data\n    pagination: {type: single}\n"
        "    budget: {group: stripe, requests_per_second: 5}\n",
        "sources.yaml:8:50: source 'api-x': budget.requests_per_second: Value error, a source in budget group "
        "'stripe' shares the group's requests_per_second (budget_groups): drop requests_per_second here, or the "
        "group\n",
        id="a grouped source with a rate of its own: at its rate",
    ),
    pytest.param(
        source_with(SINGLE, "path: /repos/{id}"),
        "sources.yaml:7:11: source 'api-x': path: Value error, {id} is a placeholder, which only a child source "
        "fills from its parent's records: add parent: {source: ..., fields: {id: <field of the parent's records>}}\n",
        id="a placeholder without a parent: at the path",
    ),
    pytest.param(
        source_with(SINGLE, "path: /repos/{id}", "parent: {source: repos, fields: {id: id}}"),
        "sources.yaml:8:22: source 'api-x': parent.source: Value error, no source 'repos' in this file "
        "(declared: api-x)\n",
        id="an unknown parent: at its name",
    ),
    pytest.param(
        source_with(SINGLE, "params:", "  " + "p" * 129 + ": 1"),
        "sources.yaml:8:7: source 'api-x': params." + "p" * 129 + ": String should have at most 128 characters",
        id="a key too long: at the key",
    ),
    pytest.param(
        source_with(SINGLE) + "  - name: api-y\n    base_url: https://api.example.com\n    records_path: data\n"
        "    pagination: {type: offset, limit: 0, total_path: total}\n",
        "sources.yaml:10:39: source 'api-y': pagination.limit: Input should be greater than or equal to 1",
        id="the second source",
    ),
    pytest.param(
        "version: 1\nx-defaults: &defaults\n  base_url: https://api.example.com\n  recods_path: data\n"
        "sources:\n  - name: api-x\n    <<: *defaults\n    pagination: {type: single}\n",
        "sources.yaml:4:3: source 'api-x': recods_path: Extra inputs are not permitted (did you mean 'records_path'?)",
        id="a merged key: where it is written",
    ),
    pytest.param(
        source_with(SINGLE) + "  - name: api-x\n    base_url: https://b.example.com\n    records_path: data\n"
        f"    {SINGLE}\n",
        "sources.yaml:7:11: source 'api-x': name: Value error, source 'api-x' is declared more than once",
        id="a check of the whole file: at the field it names",
    ),
    pytest.param(
        "version: 2\nsources: []\n", "sources.yaml:1:10: version: Input should be 1", id="outside the sources"
    ),
    pytest.param("", "sources.yaml: (file): Input should be a valid dictionary", id="an empty file: no line"),
]


@pytest.mark.parametrize(("text", "expected"), WHERE)
def test_an_error_says_the_line_and_column_of_the_node(tmp_path: Path, text: str, expected: str) -> None:
    # given a sources file with a mistake, when it is loaded
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_sources(path)
    # then one line of the message says where, as file:line:column: source: field: message
    assert expected in str(raised.value) + "\n"


@pytest.mark.parametrize(("text", "expected"), WHERE)
def test_without_the_text_the_same_message_has_no_line(text: str, expected: str) -> None:
    # parse_sources(raw, origin), the callers that build the document in code: no text, no lines
    with pytest.raises(ConfigError) as loaded:
        parse_sources(yaml.safe_load(text), "sources.yaml")
    assert re.sub(r"^sources\.yaml:\d+:\d+:", "sources.yaml:", expected) in str(loaded.value) + "\n"
    assert not re.search(r"sources\.yaml:\d", str(loaded.value))


def test_text_that_is_not_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("version: 1\nsources:\n  - name: api-x\n    params: {a: b\n")
    with pytest.raises(ConfigError, match=r"^.*sources\.yaml:5:1: not valid YAML: while parsing a flow mapping, "):
        load_sources(path)


def test_the_text_is_read_as_safe_load_reads_it() -> None:
    text = "a: &x {b: 1, c: [2, 3]}\nd:\n  <<: *x\n  e: 2026-01-01\n"
    data, places = read_yaml(text, "t.yaml")
    assert data == yaml.safe_load(text)
    written, merged = places[("d", "e")], places[("d", "b")]
    assert written.key is not None and (written.key.line, written.value.column) == (3, 5)
    assert merged.key is not None and merged.key.line == 0  # a merged key: where it is written


@pytest.mark.parametrize(
    ("loc", "path", "model"),
    [
        (("sources", 0, "pagination", "cursor", "cursor_path"), ("sources", 0, "pagination", "cursor_path"), "Cursor"),
        (("sources", 0, "incremental", "initial_value", "str"), ("sources", 0, "incremental", "initial_value"), None),
        (("sources", 0, "params", "x", "[key]"), ("sources", 0, "params", "x"), None),
        (("sources", 0, "budget", "requests_per_sec"), ("sources", 0, "budget", "requests_per_sec"), "Budget"),
        (("version",), ("version",), "SourcesFile"),
    ],
    ids=["the tag of a tagged union", "the member of a plain union", "a mapping's key", "a model", "the root"],
)
def test_pydantic_locations_become_paths_of_the_document(loc: Any, path: Any, model: str | None) -> None:
    assert document_path(SourcesFile, loc) == path
    found = model_at(SourcesFile, loc)
    assert (found.__name__[: len(model)] if found and model else found) == model


class Window(BaseModel):
    start: int
    end: int | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end is not None and self.end < self.start:
            raise field_error(self, "end", f"must not be before start ({self.start})")
        return self


class Event(BaseModel):
    window: Window
    mode: CursorPagination | None = None


def test_a_model_check_across_fields_is_reported_at_the_field_it_names() -> None:
    with pytest.raises(ValidationError) as raised:
        Event.model_validate({"window": {"start": 5, "end": 2}})
    assert raised.value.errors()[0]["loc"] == ("window", "end")
    assert describe_validation_error("event", raised.value) == (
        "event: window.end: Value error, must not be before start (5)"
    )


def test_any_document_gets_did_you_mean_for_a_literal() -> None:
    with pytest.raises(ValidationError) as raised:
        Event.model_validate({"window": {"start": 1}, "mode": {"type": "cursor", "cursor_from": "frist_record"}})
    assert describe_validation_error("event", raised.value, whole="(event)").endswith(
        "Input should be 'body', 'last_record' or 'first_record' (did you mean 'first_record'?)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            source_with(SINGLE, "records_path: items"),
            "sources.yaml:7:5: the key 'records_path' is given twice in one mapping (first at 5:5): give it once",
            id="a source's field twice",
        ),
        pytest.param(
            source_with(SINGLE, "params: {per_page: 100, state: all, per_page: 50}"),
            "sources.yaml:7:41: the key 'per_page' is given twice in one mapping (first at 7:14): give it once",
            id="a param twice in a flow mapping",
        ),
        pytest.param(
            source_with(SINGLE) + "sources: []\n",
            "sources.yaml:7:1: the key 'sources' is given twice in one mapping (first at 2:1): give it once",
            id="a top-level key twice",
        ),
    ],
)
def test_a_key_given_twice_is_refused_at_the_second(tmp_path: Path, text: str, expected: str) -> None:
    # given a sources file where one mapping holds a key twice (safe_load would keep the last one silently)
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    # when it is loaded, then it is refused at the second key, naming it and where the first one is
    with pytest.raises(ConfigError) as raised:
        load_sources(path)
    assert str(raised.value) == f"{tmp_path}/{expected}"


def test_a_merged_key_given_again_overrides_it() -> None:
    # given defaults merged into a source (<<) and one of them given again: what a merge is for, not a duplicate
    text = (
        "version: 1\nx-defaults: &defaults\n  base_url: https://api.example.com\n  records_path: data\n"
        "sources:\n  - name: api-x\n    <<: *defaults\n    records_path: items\n    pagination: {type: single}\n"
    )
    # when it is read, then the key given in the source wins
    data, _ = read_yaml(text, "sources.yaml")
    assert data["sources"][0]["records_path"] == "items"
