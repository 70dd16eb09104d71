"""The sources file's ``parent:``: child sources that load, and those refused with a message naming the source and
the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apilake.config import parse_sources
from apilake.exceptions import ConfigError

REPOS: dict[str, Any] = {
    "name": "repos",
    "base_url": "https://api.github.com",
    "path": "/user/repos",
    "records_path": "",
    "pagination": {"type": "link_header"},
}
ISSUES: dict[str, Any] = {
    "name": "issues",
    "base_url": "https://api.github.com",
    "path": "/repos/{owner}/{repo}/issues",
    "params": {"state": "all"},
    "records_path": "",
    "pagination": {"type": "link_header"},
    "parent": {"source": "repos", "fields": {"owner": "owner.login", "repo": "name"}},
}


def doc(*extra: dict[str, Any], **child: Any) -> dict[str, Any]:
    issues = copy.deepcopy(ISSUES)
    issues.update(child)
    return {"version": 1, "sources": [copy.deepcopy(REPOS), issues, *extra]}


def comments(**overrides: Any) -> dict[str, Any]:
    return {
        **copy.deepcopy(ISSUES),
        "name": "comments",
        "path": "/repos/issues/comments",
        "params": {"issue": "{number}"},
        "parent": {"source": "issues", "fields": {"number": "number"}},
        **overrides,
    }


VALID = [
    pytest.param(doc(), id="GitHub repos -> issues"),
    pytest.param(
        doc(path="/repos/{full_name}/issues", parent={"source": "repos", "fields": {"full_name": "full_name"}}),
        id="one placeholder (its slash encoded)",
    ),
    pytest.param(
        doc(path="/search/issues", params={"q": "repo:{owner}/{repo} is:open", "per_page": 100}),
        id="placeholders in a param's value",
    ),
    pytest.param(doc(params={"filter": '{"state": "all"}'}, path="/repos/{owner}/{repo}/issues"), id="a JSON param"),
    pytest.param(doc(pagination={"type": "single"}), id="single page"),
    pytest.param(doc(pagination={"type": "cursor", "cursor_path": "next"}), id="cursor"),
    pytest.param(doc(pagination={"type": "next_url", "next_url_path": "links.next"}), id="next url"),
    pytest.param(doc(pagination={"type": "page_number", "page_size": 50}), id="page number without a total"),
    pytest.param(doc(comments()), id="a grandchild"),
    pytest.param({"sources": [copy.deepcopy(ISSUES), copy.deepcopy(REPOS)]}, id="a child declared before its parent"),
    pytest.param(doc(parent={**ISSUES["parent"], "include": True}), id="include (raw only)"),
    pytest.param(doc(parent={**ISSUES["parent"], "include": False}, columns={"id": "bigint"}), id="no include"),
    pytest.param(
        doc(
            parent={**ISSUES["parent"], "include": True},
            columns={"id": "bigint", "_parent_owner": "string", "_parent_repo": "string"},
        ),
        id="include, its fields declared in columns",
    ),
]

INCLUDED = [
    pytest.param(doc(), {}, id="without include: nothing added"),
    pytest.param(
        doc(parent={**ISSUES["parent"], "include": True}),
        {"owner": "_parent_owner", "repo": "_parent_repo"},
        id="include: _parent_<placeholder>",
    ),
]


@pytest.mark.parametrize(("raw", "added"), INCLUDED)
def test_include_adds_a_parent_field_per_placeholder(raw: dict[str, Any], added: dict[str, str]) -> None:
    parent = parse_sources(raw, "sources.yaml").get("issues").parent
    assert parent is not None and parent.included_fields() == added


@pytest.mark.parametrize("raw", VALID)
def test_valid_child_sources_load(raw: dict[str, Any]) -> None:
    sources = parse_sources(raw, "sources.yaml")
    child = sources.get("issues")
    assert child.parent is not None and child.parent.source == "repos"


WITH_A_TOTAL = (
    " with a total (the planner would probe the first page of every child): use a chain style (cursor, next_url, "
    "link_header, page_number without a total) or single"
)
INVALID = [
    pytest.param(
        doc(parent={"source": "repo", "fields": {"owner": "owner.login", "repo": "name"}}),
        "sources.yaml: source 'issues': parent.source: Value error, no source 'repo' in this file "
        "(declared: repos, issues)",
        id="unknown parent",
    ),
    pytest.param(
        doc(parent={"source": "issues", "fields": {"owner": "owner.login", "repo": "name"}}),
        "sources.yaml: source 'issues': parent.source: Value error, a source cannot be its own parent",
        id="its own parent",
    ),
    pytest.param(
        {
            "sources": [
                {**copy.deepcopy(ISSUES), "name": "a", "parent": {"source": "b", "fields": ISSUES["parent"]["fields"]}},
                {**copy.deepcopy(ISSUES), "name": "b", "parent": {"source": "a", "fields": ISSUES["parent"]["fields"]}},
            ]
        },
        "sources.yaml: source 'a': parent.source: Value error, parents form a cycle: a -> b -> a",
        id="a cycle",
    ),
    pytest.param(
        doc(path="/repos/{owner}/{name}/issues"),
        "sources.yaml: source 'issues': path: Value error, {name} is not one of parent.fields (owner, repo): "
        "add name: <field of the parent's records> to parent.fields",
        id="a placeholder without its field",
    ),
    pytest.param(
        doc(params={"q": "{query}"}),
        "sources.yaml: source 'issues': params.q: Value error, {query} is not one of parent.fields (owner, repo): "
        "add query: <field of the parent's records> to parent.fields",
        id="a param's placeholder without its field",
    ),
    pytest.param(
        doc(path="/repos/{owner}/issues"),
        "sources.yaml: source 'issues': parent.fields.repo: Value error, {repo} is used neither in path nor in params",
        id="a field no placeholder uses",
    ),
    pytest.param(
        {"sources": [{**copy.deepcopy(REPOS), "path": "/repos/{owner}/issues"}]},
        "sources.yaml: source 'repos': path: Value error, {owner} is a placeholder, which only a child source "
        "fills from its parent's records: add parent: {source: ..., fields: {owner: <field of the parent's "
        "records>}}",
        id="a placeholder in a source without a parent",
    ),
    pytest.param(
        doc(sharding={"type": "daily", "start_param": "since", "end_param": "until"}),
        "sources.yaml: source 'issues': sharding: Value error, a child source (parent:) is not sharded by date: "
        "sharding: none; its parent may be",
        id="a sharded child",
    ),
    pytest.param(
        doc(incremental={"cursor_path": "updated_at", "param": "since", "initial_value": "2026-01-01T00:00:00Z"}),
        "sources.yaml: source 'issues': incremental: Value error, a child source (parent:) cannot be incremental; "
        "its parent may be",
        id="an incremental child",
    ),
    pytest.param(
        doc(schedule={"expression": "rate(1 hour)"}),
        "sources.yaml: source 'issues': schedule: Value error, a child source (parent:) runs when its parent's "
        "pages land: drop its schedule",
        id="a child with a schedule",
    ),
    pytest.param(
        doc(pagination={"type": "offset", "total_path": "total"}),
        "sources.yaml: source 'issues': pagination.total_path: Value error, a child source (parent:) cannot use "
        "offset with a total (the planner would probe the first page of every child): use a chain style (cursor, "
        "next_url, link_header, page_number without a total) or single",
        id="offset",
    ),
    pytest.param(
        doc(pagination={"type": "page_number", "total_path": "total"}),
        "sources.yaml: source 'issues': pagination.total_path: Value error, a child source (parent:) cannot use "
        "page_number" + WITH_A_TOTAL,
        id="page number with a total",
    ),
    pytest.param(
        doc(pagination={"type": "page_number", "total_pages_path": "pages"}),
        "sources.yaml: source 'issues': pagination.total_pages_path: Value error, a child source (parent:) cannot "
        "use page_number" + WITH_A_TOTAL,
        id="page number with a page count",
    ),
    pytest.param(
        doc(parent={"source": "repos", "fields": {}}),
        "sources.yaml: source 'issues': parent.fields: Dictionary should have at least 1 item after validation, not 0",
        id="no fields",
    ),
    pytest.param(
        doc(parent={"source": "repos", "fields": {"owner-name": "owner.login", "repo": "name"}}),
        "sources.yaml: source 'issues': parent.fields.owner-name: String should match pattern "
        "'^[A-Za-z_][A-Za-z0-9_]{0,31}$'",
        id="a placeholder name that is not an identifier",
    ),
    pytest.param(
        doc(parent={"source": "repos", "fields": {"owner": "", "repo": "name"}}),
        "sources.yaml: source 'issues': parent.fields.owner: String should have at least 1 character",
        id="an empty field path",
    ),
    pytest.param(
        doc(parent={"source": "repos"}),
        "sources.yaml: source 'issues': parent.fields: Field required",
        id="fields missing",
    ),
    pytest.param(
        doc(parent={**ISSUES["parent"], "include": True}, columns={"id": "bigint"}),
        "sources.yaml: source 'issues': parent.include: Value error, parent.include adds _parent_owner, "
        "_parent_repo to each record: declare them in columns (string), or drop include",
        id="include, its fields not in columns",
    ),
    pytest.param(
        doc(parent={**ISSUES["parent"], "include": True}, columns={"id": "bigint", "_parent_owner": "string"}),
        "sources.yaml: source 'issues': parent.include: Value error, parent.include adds _parent_repo to each "
        "record: declare it in columns (string), or drop include",
        id="include, one of its fields not in columns",
    ),
    pytest.param(
        doc(parent={**ISSUES["parent"], "include": "yes please"}),
        "sources.yaml: source 'issues': parent.include: Input should be a valid boolean, unable to interpret input",
        id="include not a boolean",
    ),
]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_child_sources_are_refused_naming_source_and_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_sources(raw, "sources.yaml")
    # then the one problem is said at its field, in full
    assert str(refused.value) == message
