"""The sources file's validated copy: what the layer's build writes beside sources.yaml and the Lambdas read back
instead of parsing and validating the YAML at each cold start; anything but a copy of these very bytes, made by
this apilake and pydantic, is ignored and the file validated as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from apilake import config
from apilake.config import Source, SourcesFile, load_sources, validated_copy_path, write_validated_copy
from apilake.exceptions import ConfigError
from apilake_dev import paths

# What the examples and the layer's file do not show: a budget group, a POST child of a parent, each auth kind
# that takes a secret, numeric incremental, daily shards, and settings given for retries, timeouts and the worker.
KINDS = """\
version: 1
budget_groups:
  github: {requests_per_second: 1.25}
sources:
  - name: github-repos
    base_url: https://api.github.com
    path: /user/repos
    params: {per_page: 100}
    records_path: ""
    record_id_path: id
    columns: {id: bigint, name: string, updated_at: timestamp}
    curated: {recent_days: 3}
    pagination: {type: link_header}
    auth: {type: bearer, secret_name: apilake/github}
    budget: {group: github, max_concurrency: 3}
    schedule: {expression: rate(1 hour), complete_within_minutes: 30}
  - name: github-issues-graphql
    base_url: https://api.github.com
    path: /graphql
    method: post
    body:
      query: "query($owner: String!, $repo: String!, $after: String) { x }"
      variables: {owner: "{owner}", repo: "{repo}", after: null}
    records_path: data.nodes
    error_path: errors
    auth: {type: bearer, secret_name: apilake/github}
    budget: {group: github}
    pagination: {type: cursor, placement: body, cursor_param: variables.after, cursor_path: data.end,
                 has_more_path: data.more}
    parent: {source: github-repos, fields: {owner: owner.login, repo: name}, include: true}
  - name: zoom-users
    base_url: https://api.zoom.us
    path: /v2/users
    records_path: users
    pagination: {type: cursor, cursor_param: next_page_token, cursor_path: next_page_token}
    auth: {type: oauth2_client_credentials, token_url: https://zoom.us/oauth/token, grant_type: account_credentials,
           secret_name: apilake/zoom, scopes: [user:read], token_params: {account_id: abc}, client_auth: basic}
    incremental: {cursor_path: updated_at, param: since, initial_value: 100, format: number}
  - name: stripe-charges
    base_url: https://api.stripe.com
    path: /v1/charges
    records_path: data
    pagination: {type: offset, offset_param: offset, limit_param: limit, limit: 50, total_path: total}
    sharding: {type: daily, start_param: from, end_param: to}
    auth: {type: headers_from_secret, secret_name: apilake/stripe, headers: {X-Key: key, X-Account: account}}
    retries: {max_attempts: 3}
    timeouts: {read_seconds: 10}
    worker: {timeout_seconds: 120, memory_mb: 1024}
  - name: basic-one
    base_url: https://api.example.com
    records_path: items
    pagination: {type: page_number, total_pages_path: pages}
    auth: {type: http_basic, secret_name: apilake/basic}
"""
FILES = [
    pytest.param(paths.EXAMPLE_SOURCES.read_text(), id="examples"),
    pytest.param(paths.SOURCES.read_text(), id="layer"),
    pytest.param(KINDS, id="more kinds"),
]


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files load_sources parsed and validated from their YAML (those it took a validated copy of are not)."""
    seen: list[Path] = []
    validate = config._validate_file

    def spy(path: Path, data: bytes) -> SourcesFile:
        seen.append(path)
        return validate(path, data)

    monkeypatch.setattr(config, "_validate_file", spy)
    return seen


def written(text: str, folder: Path) -> Path:
    target = folder / "sources.yaml"
    target.write_text(text)
    return target


@pytest.mark.parametrize("text", FILES)
def test_a_validated_copy_is_read_back_as_what_validating_the_file_gives(
    text: str, tmp_path: Path, validations: list[Path]
) -> None:
    # Given a sources file and the validated copy the layer's build writes beside it
    path = written(text, tmp_path)
    expected = load_sources(path)
    write_validated_copy(path)
    validations.clear()
    # When it is loaded as a Lambda does
    loaded = load_sources(path, validated_copy=True)
    # Then nothing was parsed or validated, and the sources are those validating the file gives, each grouped
    # budget's share of its group included (set by the validation, not in the file)
    assert validations == []
    assert loaded == expected
    shares = [(s.budget.per_worker_rps, s.budget.sharing_workers) for s in loaded.sources]
    assert shares == [(s.budget.per_worker_rps, s.budget.sharing_workers) for s in expected.sources]
    assert [s.model_fields_set for s in loaded.sources] == [s.model_fields_set for s in expected.sources]


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _edit_file(path: Path) -> dict[str, Any]:
    document = _document(path)
    document["sources"][0]["records_path"] = "edited"
    path.write_text(yaml.safe_dump(document))
    return document


def _other_pydantic(path: Path) -> dict[str, Any]:
    copy = validated_copy_path(path)
    copy.write_bytes(copy.read_bytes().replace(b" pydantic ", b" pydantic 0.0.0-", 1))
    return _document(path)


def _no_copy(path: Path) -> dict[str, Any]:
    validated_copy_path(path).unlink()
    return _document(path)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_edit_file, id="the file changed after the copy was made"),
        pytest.param(_other_pydantic, id="a copy made by another pydantic"),
        pytest.param(_no_copy, id="no copy"),
    ],
)
def test_a_copy_not_made_from_these_bytes_is_ignored(change: Any, tmp_path: Path, validations: list[Path]) -> None:
    # Given a sources file whose validated copy is stale, of another pydantic, or missing
    path = written(paths.EXAMPLE_SOURCES.read_text(), tmp_path)
    write_validated_copy(path)
    document = change(path)
    validations.clear()
    # When it is loaded as a Lambda does
    loaded = load_sources(path, validated_copy=True)
    # Then the file itself was validated, as it is now
    assert validations == [path]
    assert loaded.sources[0].records_path == document["sources"][0]["records_path"]


def test_an_invalid_file_gets_no_copy_and_the_error_loading_it_gives(tmp_path: Path) -> None:
    # Given a sources file with an error
    path = tmp_path / "sources.yaml"
    path.write_text(paths.EXAMPLE_SOURCES.read_text().replace("page_size: ", "page_size: -", 1))
    with pytest.raises(ConfigError) as loading:
        load_sources(path)
    # When its validated copy is asked for (the layer's build)
    with pytest.raises(ConfigError) as writing:
        write_validated_copy(path)
    # Then the build fails with the error the Lambdas would have given, and no copy is written
    assert str(writing.value) == str(loading.value)
    assert "page_size" in str(writing.value)
    assert not validated_copy_path(path).exists()


MODEL_DEFAULTS = [
    pytest.param(name, id=name) for name, field in Source.model_fields.items() if isinstance(field.default, BaseModel)
]


@pytest.mark.parametrize("name", MODEL_DEFAULTS)
def test_a_model_default_of_a_source_is_what_validating_it_gives(name: str) -> None:
    # Given a field of Source whose default is a model (made with model_construct: not validated, not built)
    default = Source.model_fields[name].default
    # When the same values are validated
    validated = type(default).model_validate(default.model_dump(exclude_unset=True))
    # Then they are the same model, with the same fields set
    assert default == validated
    assert default.model_fields_set == validated.model_fields_set


def test_a_copy_is_read_only_where_asked_for_the_commands_validate_the_file(
    tmp_path: Path, validations: list[Path]
) -> None:
    # Given a sources file with its validated copy beside it (anyone may write a folder a command reads)
    path = written(paths.EXAMPLE_SOURCES.read_text(), tmp_path)
    write_validated_copy(path)
    validations.clear()
    # When a command (not a Lambda) loads it
    load_sources(path)
    # Then the file is parsed and validated: a pickle is read only from the Lambdas' read-only layer
    assert validations == [path]
