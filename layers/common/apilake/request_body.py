"""A source's ``method`` (GET or POST), and the JSON body of a POST source: its template (``body:``), the dotted
paths a paginator with ``placement: body`` sets in it, and the canonical text a request's fingerprint hashes; and
the errors such an API reports in a 200 response (GraphQL's ``errors``, at the source's ``error_path``).

A template is a JSON object as written in the sources file; each page's request body is a deep copy of it
with the page's values (page number, size, offset, limit or cursor) set at their paths, e.g. a GraphQL
``{"query": ..., "variables": {"after": null}}`` with the cursor at ``variables.after``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, WithJsonSchema

from apilake.exceptions import PermanentError
from apilake.records import find_optional

JsonObject = dict[str, Any]


def _method_upper(value: object) -> object:
    """``post`` is ``POST``: HTTP's methods are upper case on the wire, people write them either way in YAML."""
    return value.upper() if isinstance(value, str) else value


# GET or POST, in any case (sent upper case); the JSON Schema offers the upper-case names for completion.
Method = Annotated[
    Literal["GET", "POST"],
    BeforeValidator(_method_upper),
    WithJsonSchema(
        {"anyOf": [{"enum": ["GET", "POST"]}, {"pattern": "^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt])$"}], "type": "string"}
    ),
]


def json_object(value: object) -> JsonObject:
    """``value`` if it is a JSON object (text keys, JSON values all the way down); ValueError otherwise,
    worded for the config's error (the field is ``body``)."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object (names to values), got {_kind(value)}")
    _check_json(value, "")
    return value


def _check_json(value: object, at: str) -> None:
    where = f" at {at!r}" if at else ""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise ValueError(f"the key {key!r}{where} is not text: quote it")
            _check_json(inner, f"{at}.{key}" if at else key)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_json(inner, f"{at}.{index}" if at else str(index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"the value{where} is {value}, which JSON cannot carry")
    elif value is not None and not isinstance(value, str | int | float):  # bool is an int
        raise ValueError(f"the value{where} is {_kind(value)}, not a JSON value")


def _kind(value: object) -> str:
    if isinstance(value, datetime | date):
        return "a date (quote it to send it as text)"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def path_problem(template: Mapping[str, Any], path: str) -> str | None:
    """Why a value cannot be set at the dotted ``path`` of ``template`` (None: it can). Every part but the
    last must be absent or an object (null too is refused: a page would have to replace it); the last absent
    or a placeholder that is not an object or a list."""
    value: Any = template
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1]):
        present = isinstance(value, dict) and part in value
        value = value.get(part) if isinstance(value, dict) else None
        if present and not isinstance(value, dict):
            at = ".".join(parts[: depth + 1])
            return (
                f"the body template holds {_kind(value)} at {at!r}, not an object, "
                f"so {'.'.join(parts[depth + 1 :])!r} cannot be set in it"
                + (": write {} there, or leave it out" if value is None else "")
            )
    last = value.get(parts[-1]) if isinstance(value, dict) else None
    if isinstance(last, dict | list):
        held = "an object" if isinstance(last, dict) else "a list"
        return f"the body template holds {held} at {path!r}, which the page's value would replace"
    return None


def with_values(template: Mapping[str, Any] | None, values: Mapping[str, Any]) -> JsonObject:
    """A deep copy of ``template`` (``{}`` when None) with each value set at its dotted path; the objects on
    the way are made when absent. The config was checked with :func:`path_problem`; a path through something
    else than an object is still a :class:`PermanentError` saying where (the page fails, noted), never a TypeError."""
    body: JsonObject = copy.deepcopy(dict(template or {}))
    for path, value in values.items():
        *parents, last = path.split(".")
        here = body
        for depth, part in enumerate(parents):
            here = here.setdefault(part, {})
            if not isinstance(here, dict):
                at = ".".join(parents[: depth + 1])
                raise PermanentError(
                    f"the body template holds {_kind(here)} at {at!r}, not an object: cannot set {path!r}"
                )
        here[last] = value
    return body


def text_leaves(value: Any, at: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """Each text value of a JSON template, with its path (keys and list indices), in order: where a child's
    ``{placeholders}`` may stand in its body (:mod:`apilake.parent_config`)."""
    if isinstance(value, str):
        return [(at, value)]
    if isinstance(value, dict):
        return [leaf for key, inner in value.items() for leaf in text_leaves(inner, (*at, key))]
    if isinstance(value, list):
        return [leaf for index, inner in enumerate(value) for leaf in text_leaves(inner, (*at, index))]
    return []


def with_texts(value: Any, change: Callable[[str], str]) -> Any:
    """A copy of a JSON template with ``change`` applied to each text value (keys and other values as they are)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: with_texts(inner, change) for key, inner in value.items()}
    if isinstance(value, list):
        return [with_texts(inner, change) for inner in value]
    return value


def canonical(body: Any) -> str:
    """The text that stands for a body in a request's fingerprint: keys sorted, no spaces, UTF-8 as is."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def reported_errors(document: Any, error_path: str, scrub: Callable[[str], str] = str) -> str | None:
    """What a 200 response reports at ``error_path`` (GraphQL's ``errors``), as the end of an error's text;
    None when nothing is there (absent, null, empty, false). The first error's ``message`` is quoted, cut to
    200 characters: the vendor's own words, which say what was wrong with the query; ``scrub`` (the request's
    credentials, :meth:`apilake.auth.Credentials.scrub`) blanks them before the cut, which could halve one."""
    reported = find_optional(document, error_path)
    if reported is None or reported is False or reported in ([], {}, ""):
        return None
    first = reported[0] if isinstance(reported, list) else reported
    said = first.get("message") if isinstance(first, dict) else first
    how_many = f"{len(reported)} error(s)" if isinstance(reported, list) else "an error"
    quoted = f": {scrub(said)[:200]!r}" if isinstance(said, str) and said else ""
    return f"reports {how_many} at {error_path!r}{quoted}"
