"""Finding things in a vendor's JSON document by the dotted paths of the sources file."""

from __future__ import annotations

from typing import Any

from apilake.exceptions import BadResponseError

_MISSING = object()


def dig(document: Any, path: str) -> Any:
    """The value at ``path`` ("data.items", "" for the document itself), or a sentinel when absent."""
    value = document
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def find(document: Any, path: str, what: str) -> Any:
    """Like :func:`dig`, but a missing value is a permanent error naming the path."""
    value = dig(document, path)
    if value is _MISSING:
        raise BadResponseError(f"{what} not found at path {path!r} of the response")
    return value


def find_optional(document: Any, path: str | None) -> Any:
    """The value at ``path``, or None when there is no path or nothing there."""
    if path is None:
        return None
    value = dig(document, path)
    return None if value is _MISSING else value


def extract_records(document: Any, path: str) -> list[Any]:
    records = find(document, path, "records")
    if not isinstance(records, list):
        raise BadResponseError(f"records at path {path!r} are a {type(records).__name__}, not a list")
    return records
