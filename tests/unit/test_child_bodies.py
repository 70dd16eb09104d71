"""A child source's ``{placeholders}`` in its POST body (review S7): filled per parent record in the body's texts,
refused where they would be sent as written (base_url, headers) or could be a GraphQL selection; a body path that
runs through null is refused at validation, and a page's body is never built through a non-object (review S8)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apilake.children import bind
from apilake.config import Source, parse_sources
from apilake.exceptions import ConfigError, PermanentError
from apilake.messages import WorkItem
from apilake.pagination import paginator_for
from apilake.request_body import with_values
from tests.unit.test_config_parent import ISSUES, REPOS

GRAPHQL = "query($owner: String!, $repo: String!, $after: String) { repository(owner: $owner, name: $repo) { id } }"


def post_child(**overrides: Any) -> dict[str, Any]:
    issues = copy.deepcopy(ISSUES)
    issues.update(
        method="POST",
        path="/graphql",
        params={},
        records_path="data.repository.issues.nodes",
        pagination={"type": "cursor", "cursor_path": "end", "placement": "body", "cursor_param": "variables.after"},
        body={"query": GRAPHQL, "variables": {"owner": "{owner}", "repo": "{repo}", "after": None}},
    )
    issues.update(overrides)
    return {"version": 1, "sources": [copy.deepcopy(REPOS), issues]}


def child(raw: dict[str, Any]) -> Source:
    return parse_sources(raw, "sources.yaml").get("issues")


def item(page: int = 1, cursor: str | None = None) -> WorkItem:
    return WorkItem(
        run_id="r1",
        source="issues",
        ingestion_date="2026-05-01",
        shard="p-x-0123456789abcdef",
        page=page,
        cursor=cursor,
        parent_values={"owner": "octo cat", "repo": "hello/world"},
    )


def test_a_child_posts_its_parent_values_in_its_body() -> None:
    # Given a GraphQL child whose variables hold {owner} and {repo}
    source = child(post_child())
    # When page 2 of a parent record's shard is built
    bound = bind(source, item(page=2, cursor='"c2"'))
    request = paginator_for(bound).request(item(page=2, cursor='"c2"'))
    # Then the values are JSON strings as they are (not percent-encoded), the cursor set beside them
    assert request.method == "POST" and request.url == "https://api.github.com/graphql"
    assert request.body == {
        "query": GRAPHQL,
        "variables": {"owner": "octo cat", "repo": "hello/world", "after": "c2"},
    }
    assert source.body is not None and source.body["variables"]["owner"] == "{owner}"  # the template untouched


def test_placeholders_anywhere_in_the_body_are_filled_and_other_braces_left() -> None:
    body = {"q": "repo:{owner}/{repo} is:open", "filters": [{"terms": ["{repo}", 1, None]}], "n": 5}
    bound = bind(child(post_child(body=body, pagination={"type": "single"})), item())
    assert bound.body == {
        "q": "repo:octo cat/hello/world is:open",
        "filters": [{"terms": ["hello/world", 1, None]}],
        "n": 5,
    }


VALID = [
    pytest.param(post_child(), id="GraphQL variables"),
    pytest.param(post_child(body={"query": GRAPHQL, "variables": {"o": "{owner}", "r": "{repo}"}}), id="any key"),
    pytest.param(
        post_child(path="/repos/{owner}/x", body={"query": "{viewer{login}}", "r": "{repo}"}),
        id="a compact query's own braces, no parent field in them",
    ),
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_post_children_load(raw: dict[str, Any]) -> None:
    assert child(raw).parent is not None


WHERE = "sources.yaml: source 'issues': "
INVALID = [
    pytest.param(
        post_child(body={"query": GRAPHQL, "variables": {"owner": "{owner}"}}),
        "parent.fields.repo: Value error, {repo} is used neither in path nor in params nor in body",
        id="a field used nowhere",
    ),
    pytest.param(
        post_child(base_url="https://{owner}.example.com"),
        "base_url: Value error, {owner}: a child source's placeholders are filled in path, params and body only, "
        "not in base_url",
        id="in base_url",
    ),
    pytest.param(
        post_child(headers={"X-Repo": "{repo}"}),
        "headers.X-Repo: Value error, {repo}: a child source's placeholders are filled in path, params and body "
        "only, not in headers",
        id="in a header",
    ),
    pytest.param(
        post_child(
            body={"query": '{repository(owner:"{owner}"){issues{nodes{repo}}}}', "variables": {"repo": "{repo}"}}
        ),
        "body.query: Value error, {owner} is one of parent.fields, but this text has other braces (a GraphQL "
        'query?), where {owner} could be its own: pass the value as a variable (variables: {owner: "{owner}"}), '
        "or name the placeholder apart",
        id="in a text with other braces",
    ),
    pytest.param(
        post_child(
            body={"variables": {"owner": "{owner}", "repo": "{repo}", "after": None}},
            pagination={
                "type": "cursor",
                "cursor_path": "end",
                "placement": "body",
                "cursor_param": "variables.after.value",
            },
        ),
        "pagination.cursor_param: Value error, 'variables.after.value': the body template holds null at "
        "'variables.after', not an object, so 'value' cannot be set in it: write {} there, or leave it out",
        id="a body path through null",
    ),
]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_post_children_are_refused_at_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(raw, "sources.yaml")
    assert WHERE + message in str(raised.value)


@pytest.mark.parametrize(
    ("template", "path", "message"),
    [
        ({"variables": {"after": None}}, "variables.after.x", "the body template holds null at 'variables.after'"),
        ({"variables": [1]}, "variables.after", "the body template holds a list at 'variables'"),
        ({"a": {"b": "text"}}, "a.b.c", "the body template holds a string at 'a.b'"),
    ],
    ids=["null", "list", "text"],
)
def test_a_body_is_never_built_through_a_non_object(template: dict[str, Any], path: str, message: str) -> None:
    # Given a template the config check would refuse (built here directly), when a page's value is set through it
    with pytest.raises(PermanentError) as raised:
        with_values(template, {path: "c2"})
    # Then a permanent error says where, not a TypeError
    assert str(raised.value) == f"{message}, not an object: cannot set {path!r}"


def test_absent_objects_on_the_way_are_made() -> None:
    assert with_values({"q": 1}, {"variables.after": "c2"}) == {"q": 1, "variables": {"after": "c2"}}
