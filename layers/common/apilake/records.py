"""Reading a vendor's JSON document, and finding things in it by the dotted paths of the sources file.

A page is parsed by orjson (a few times faster than Python's json) into exactly what json gives: where orjson
refuses a text json reads (NaN and Infinity, numbers beyond a double, escaped lone surrogates, UTF-16 and
UTF-32, a byte order mark), json reads it, and a page that may hold an integer beyond 64 bits (which orjson
would read as a float) is read by json whole.

A large page is not parsed into objects whole: the array at the source's ``records_path`` is kept
as its JSON text (:class:`LazyRecords`), and each record is parsed when it is read, one at a time,
as the page is encoded. The rest of the document (totals, cursors, links) is parsed as usual.

Whole or lazy, a document nested deeper than :data:`MAX_DEPTH` is refused before it is parsed:
Python's JSON decoder and encoder recurse once per level, and fail (RecursionError) some 1,500
levels down, at a depth that depends on the call stack they run in.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any, overload

import orjson

from apilake.exceptions import BadResponseError

# Below this, a page is parsed whole (faster); above it, its records are parsed one at a time.
LAZY_ABOVE_BYTES = 1_000_000
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Arrays and objects inside one another: far more than any vendor's data, far fewer than Python's JSON can take.
MAX_DEPTH = 512
# A run of 20 digits, or of 19 after a minus sign, may be an integer beyond 64 bits: orjson reads one as a
# float (json as an int), so a page with such a run anywhere (a string too) is left to json. Digits map to "0".
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_WIDE_INTEGERS = (b"0" * 20, b"-" + b"0" * 19)
_SCREENED_BYTES = 1 << 20  # a large page is screened a piece at a time (no copy of it whole)


class NestingError(ValueError):
    """The document is nested deeper than :data:`MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")


class LazyRecords(Sequence[Any]):
    """The records array of a large page, as its JSON text and where each record starts and ends in it.
    With ``fast`` (orjson reads the page as json does), a record is read by orjson, else (or where orjson
    refuses it) by json."""

    def __init__(self, text: str, starts: array[int], ends: array[int], fast: bool) -> None:
        self._text = text
        self._starts = starts
        self._ends = ends
        self._fast = fast

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._record(self._starts[index], self._ends[index])

    def __iter__(self) -> Iterator[Any]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield self._record(start, end)

    def _record(self, start: int, end: int) -> Any:
        if self._fast:
            try:
                return orjson.loads(self._text[start:end])
            except orjson.JSONDecodeError:
                pass  # NaN, Infinity, a lone surrogate, ...: json reads it
        return _DECODER.raw_decode(self._text, start)[0]


class _NotLazyError(Exception):
    """The document is not shaped as the records path says: parse it whole (and report it as usual)."""


def parse_document(body: bytes | bytearray, records_path: str) -> Any:
    """The JSON document of a page; above :data:`LAZY_ABOVE_BYTES` its records are :class:`LazyRecords`.
    Raises ValueError (JSONDecodeError, UnicodeDecodeError; NestingError) when the body is not JSON
    (or is nested too deep)."""
    encoding = json.detect_encoding(body)
    # A page with no more "[" and "{" bytes than MAX_DEPTH is no deeper (in any encoding json reads, each
    # bracket has such a byte): most pages of up to a few hundred records skip the measure
    if (
        body.count(b"[") + body.count(b"{") > MAX_DEPTH
        and nesting_depth(body if encoding.startswith("utf-8") else body.decode(encoding).encode()) > MAX_DEPTH
    ):
        raise NestingError
    fast = encoding == "utf-8" and not _may_hold_wide_integers(body)
    if len(body) < LAZY_ABOVE_BYTES:
        return _loads(body) if fast else json.loads(body)
    text = body.decode(encoding)
    try:
        value, end = _value(text, _skip(text, 0), records_path.split(".") if records_path else [], fast)
    except _NotLazyError:
        return json.loads(text)
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _loads(body: bytes | bytearray) -> Any:
    """What json.loads gives (or raises) for a UTF-8 body without integers beyond 64 bits."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)  # what orjson refuses: json reads it (NaN, ...) or raises its own error


def _may_hold_wide_integers(body: bytes | bytearray) -> bool:
    """Whether the body has a run of digits that may be an integer beyond 64 bits (in a string or not)."""
    overlap = len(_WIDE_INTEGERS[1]) - 1  # a run across two pieces is seen whole in the first
    for start in range(0, len(body), _SCREENED_BYTES):
        screened = body[start : start + _SCREENED_BYTES + overlap].translate(_DIGITS)
        if any(run in screened for run in _WIDE_INTEGERS):
            return True
    return False


_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"')
_LEVEL = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 for an opening, -1 for a closing


def nesting_depth(body: bytes | bytearray) -> int:
    """How deep the arrays and objects of a UTF-8 JSON text go, without parsing it (and at a fraction of
    the time): brackets inside strings do not count. Exact for JSON, an estimate for anything else
    (which does not parse anyway)."""
    # Escaped backslashes, then escaped quotes, go: every quote left opens or closes a string.
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Keep the brackets and the quotes; an empty string (most strings, once emptied) goes first, then
    # the strings with brackets in them. Dropping a pair of neighbouring quotes keeps the others paired.
    structure = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = _STRING.sub(b"", structure)
    return max(accumulate(array("b", structure.translate(_LEVEL, b'"'))), default=0)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _value(text: str, pos: int, path: list[str], fast: bool) -> tuple[Any, int]:
    """The value starting at ``pos`` and where it ends; the array at ``path`` below it stays lazy."""
    if not path:
        if not text.startswith("[", pos):
            raise _NotLazyError
        return _lazy_array(text, pos, fast)
    if not text.startswith("{", pos):
        raise _NotLazyError
    found: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        raise _NotLazyError
    while True:
        key, pos = _DECODER.raw_decode(text, pos)
        if not isinstance(key, str):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        pos = _skip(text, pos + 1)
        found[key], pos = _value(text, pos, path[1:], fast) if key == path[0] else _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            if path[0] not in found:
                raise _NotLazyError
            return found, pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


def _lazy_array(text: str, pos: int, fast: bool) -> tuple[LazyRecords, int]:
    starts, ends = array("q"), array("q")
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return LazyRecords(text, starts, ends, fast), pos + 1
    while True:
        starts.append(pos)
        _, pos = _DECODER.raw_decode(text, pos)  # one record at a time: built, checked, dropped
        ends.append(pos)
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            return LazyRecords(text, starts, ends, fast), pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


# A JSON value's kind, as the worker notes it per top-level field (the run's schema drift, apilake.drift); a
# string of a field declared a timestamp, date or bigint is noted by its text's shape (FieldKinds' ``texts``).
KINDS = ("string", "timestamp", "date", "integer", "number", "boolean", "object", "array", "null")
_KIND_OF_TYPE: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def kind_of(value: Any) -> str:
    """The JSON kind of a value as :mod:`json` parses it (exactly these types: no subclass)."""
    return _KIND_OF_TYPE[type(value)]


# A field's strings -> the kind of those a check (a regex's fullmatch) accepts; the others stay "string".
TextKinds = Mapping[str, tuple[Callable[[str], object], str]]


class ObservedRecords(Sequence[Any]):
    """A page's records, passed through unchanged to the lake writer, which reads them once as it encodes them:
    a subclass notes what it needs in ``__iter__`` on the way, so a large page is not parsed twice."""

    def __init__(self, records: Sequence[Any]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._records[index]


class FieldKinds(ObservedRecords):
    """A page's records, as the lake writer reads them (once, as it encodes them), noting the JSON kinds of
    each record's top-level fields on the way (as :class:`apilake.incremental.HighWater` notes its cursor):
    a large page's lazily parsed records are not parsed twice. A record that is not an object has no fields.
    A string of a field in ``texts`` is noted as its kind there when its check accepts it."""

    def __init__(self, records: Sequence[Any], texts: TextKinds | None = None) -> None:
        super().__init__(records)
        self._texts = texts or {}
        self._seen: dict[str, set[type | str]] = {}

    def __iter__(self) -> Iterator[Any]:
        seen, texts = self._seen, self._texts
        for record in self._records:
            if isinstance(record, dict):
                for field, value in record.items():
                    kind: type | str = type(value)
                    if kind is str and texts and (check := texts.get(field)) is not None and check[0](value):
                        kind = check[1]
                    kinds = seen.get(field)
                    if kinds is None:
                        seen[field] = {kind}
                    else:
                        kinds.add(kind)
            yield record

    @property
    def fields(self) -> dict[str, list[str]]:
        """Each top-level field seen -> its kinds (in :data:`KINDS`' order), the fields in the order first seen."""
        return {
            field: sorted({t if isinstance(t, str) else _KIND_OF_TYPE[t] for t in types}, key=KINDS.index)
            for field, types in self._seen.items()
        }


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


def extract_records(document: Any, path: str) -> Sequence[Any]:
    records = find(document, path, "records")
    if not isinstance(records, list | LazyRecords):
        raise BadResponseError(f"records at path {path!r} are a {type(records).__name__}, not a list")
    return records
