"""A child source's ``parent:``: the source whose records it is fetched for, and the fields of each parent record
that fill the child's ``{placeholders}`` (in its ``path``, each value one path segment, and in its ``params``).

    - name: issues
      path: /repos/{owner}/{repo}/issues
      parent:
        source: repos
        fields: {owner: owner.login, repo: name}

The checks of one source are :func:`check_child` (``Source``'s validator), those across the file (the parent is
declared, no cycle) :func:`check_parents` (``SourcesFile``'s). :mod:`apilake.children` runs the fan-out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field, StringConstraints

from apilake.exceptions import field_error
from apilake.pagination_config import (
    JsonPath,
    OffsetPagination,
    PageNumberPagination,
    _Model,
)
from apilake.request_body import text_leaves

if TYPE_CHECKING:
    from apilake.config import Source

PLACEHOLDER = r"[A-Za-z_][A-Za-z0-9_]{0,31}"
# ``{name}`` in a path or a param's value; any other brace (a JSON filter in a param, say) is left as it is.
_PLACEHOLDER = re.compile(r"\{(" + PLACEHOLDER + r")\}")
Placeholder = Annotated[str, StringConstraints(pattern=f"^{PLACEHOLDER}$")]
MAX_PLACEHOLDERS = 8
INCLUDED_PREFIX = "_parent_"  # parent.include: the field of a child record holding a placeholder's value


class ParentConfig(_Model):
    """``source``: the parent source's name; ``fields``: placeholder -> dotted path in a parent record;
    ``include``: add each placeholder's value to every record of the child as ``_parent_<placeholder>``."""

    source: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,37}$")]
    fields: dict[Placeholder, Annotated[JsonPath, StringConstraints(min_length=1)]] = Field(
        min_length=1, max_length=MAX_PLACEHOLDERS
    )
    include: bool = False

    def included_fields(self) -> dict[str, str]:
        """placeholder -> the top-level field ``include`` adds to each child record (none without ``include``)."""
        return {name: f"{INCLUDED_PREFIX}{name}" for name in self.fields} if self.include else {}


def placeholders(text: str) -> list[str]:
    """The ``{name}`` placeholders of ``text``, in order."""
    return _PLACEHOLDER.findall(text)


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of ``values`` replaced by ``values[name]`` (already encoded as the place
    needs); any other ``{name}`` as it is (a GraphQL selection ``{id}`` in a body)."""
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)


def used_placeholders(source: Source) -> dict[str, str]:
    """Each placeholder the source uses -> where (``path``, ``params.<name>``, ``body.<path>``), the first place
    it is used. In the body only the names of ``parent.fields`` are placeholders: a GraphQL query's braces
    (``{id}``) are its own."""
    used: dict[str, str] = {}
    for name in placeholders(source.path):
        used.setdefault(name, "path")
    for param, value in source.params.items():
        for name in placeholders(value):
            used.setdefault(name, f"params.{param}")
    fields = source.parent.fields if source.parent is not None else {}
    for at, text in text_leaves(source.body or {}, ("body",)):
        for name in placeholders(text):
            if name in fields:
                used.setdefault(name, ".".join(map(str, at)))
    return used


def _check_unfilled(source: Source, fields: Collection[str]) -> None:
    """A child's placeholders are filled in path, params and body only: one in base_url or a header would be sent
    as written; one in a body text with other braces (a GraphQL query: its ``{id}`` is a selection) is ambiguous."""
    places: list[tuple[tuple[str, ...], object]] = [(("base_url",), source.base_url)]
    places += [(("headers", name), value) for name, value in source.headers.items()]
    for place, value in places:
        if isinstance(value, str) and (found := placeholders(value)):
            raise field_error(
                source,
                place,
                f"{{{found[0]}}}: a child source's placeholders are filled in path, params and body only, "
                f"not in {place[0]}",
            )
    for at, text in text_leaves(source.body or {}, ("body",)):
        known = [name for name in placeholders(text) if name in fields]
        rest = fill(text, dict.fromkeys(known, ""))
        if known and ("{" in rest or "}" in rest):
            raise field_error(
                source,
                at,
                f"{{{known[0]}}} is one of parent.fields, but this text has other braces (a GraphQL query?), where "
                f"{{{known[0]}}} could be its own: pass the value as a variable (variables: {{{known[0]}: "
                f'"{{{known[0]}}}"}}), or name the placeholder apart',
            )


def check_child(source: Source) -> None:
    """A ValidationError at the field of ``source`` its ``parent`` (or its absence) does not fit."""
    parent = source.parent
    if parent is None:
        if found := placeholders(source.path):
            raise field_error(
                source,
                "path",
                f"{{{found[0]}}} is a placeholder, which only a child source fills from its parent's records: add "
                "parent: {source: ..., fields: {" + found[0] + ": <field of the parent's records>}}",
            )
        return
    if parent.source == source.name:
        raise field_error(source, ("parent", "source"), "a source cannot be its own parent")
    used = used_placeholders(source)
    for name, where in used.items():
        if name not in parent.fields:
            raise field_error(
                source,
                tuple(where.split(".", 1)),
                f"{{{name}}} is not one of parent.fields ({', '.join(parent.fields)}): "
                f"add {name}: <field of the parent's records> to parent.fields",
            )
    _check_unfilled(source, parent.fields)
    for name in parent.fields:
        if name not in used:
            raise field_error(
                source,
                ("parent", "fields", name),
                f"{{{name}}} is used neither in path nor in params"
                + (" nor in body" if source.method == "POST" else ""),
            )
    undeclared = [field for field in parent.included_fields().values() if field not in (source.columns or {})]
    if source.columns is not None and undeclared:
        raise field_error(
            source,
            ("parent", "include"),
            f"parent.include adds {', '.join(undeclared)} to each record: declare "
            f"{'it' if len(undeclared) == 1 else 'them'} in columns (string), or drop include",
        )
    if source.sharding.type != "none":
        raise field_error(
            source, "sharding", "a child source (parent:) is not sharded by date: sharding: none; its parent may be"
        )
    if source.incremental is not None:
        raise field_error(source, "incremental", "a child source (parent:) cannot be incremental; its parent may be")
    if source.schedule is not None:
        raise field_error(
            source, "schedule", "a child source (parent:) runs when its parent's pages land: drop its schedule"
        )
    pagination = source.pagination
    total = None  # the field that makes the planner probe page 1 for a total (offset always has one)
    if isinstance(pagination, OffsetPagination | PageNumberPagination) and pagination.total_path is not None:
        total = "total_path"
    elif isinstance(pagination, PageNumberPagination) and pagination.total_pages_path is not None:
        total = "total_pages_path"
    if total is not None:
        raise field_error(
            source,
            ("pagination", total),
            f"a child source (parent:) cannot use {pagination.type} with a total (the planner would probe the first "
            "page of every child): use a chain style (cursor, next_url, link_header, page_number without a total) "
            "or single",
        )


def check_parents(owner: BaseModel, sources: Sequence[Source]) -> None:
    """A ValidationError at ``sources.<i>.parent.source`` of ``owner`` (the sources file) when a parent is not
    declared, or parents form a cycle."""
    by_name = {source.name: source for source in sources}
    for index, source in enumerate(sources):
        if source.parent is None:
            continue
        at = ("sources", index, "parent", "source")
        if source.parent.source not in by_name:
            raise field_error(
                owner, at, f"no source '{source.parent.source}' in this file (declared: {', '.join(by_name)})"
            )
        chain = [source.name]
        current = by_name[source.parent.source]
        while True:
            chain.append(current.name)
            if current.name == source.name:
                raise field_error(owner, at, f"parents form a cycle: {' -> '.join(chain)}")
            if current.parent is None or current.parent.source not in by_name or chain.count(current.name) > 1:
                break  # the end of the line, or a cycle that does not pass through this source (reported on its own)
            current = by_name[current.parent.source]


def children_of(sources: Iterable[Source], parent: str) -> list[Source]:
    """The sources whose parent is ``parent``, in the file's order."""
    return [source for source in sources if source.parent is not None and source.parent.source == parent]


def descendants_of(sources: Iterable[Source], parent: str) -> list[Source]:
    """The children of ``parent``, theirs, and so on (parents before their children)."""
    listed = list(sources)
    found: list[Source] = []
    queue = [parent]
    while queue:
        for child in children_of(listed, queue.pop(0)):
            if all(child.name != seen.name for seen in found):
                found.append(child)
                queue.append(child.name)
    return found
