"""`apilake schema infer`: a source's ``columns:`` block, inferred from the records in the local lake folder.

Every landed page of the source (``<lake>/raw/source=<name>/**/page=*.json.gz``, gzip NDJSON) is read, each
record's top-level fields noted with the JSON kinds of their values (as the worker notes them for the schema
drift, :mod:`apilake.drift`), and each field given the type that holds every value seen:

- integers only: ``bigint``; numbers (integers among them): ``double``; booleans: ``boolean``;
- strings only: ``date`` when every one is ``YYYY-MM-DD``, ``timestamp`` when every one is an ISO 8601
  timestamp (``2026-11-26T13:00:05Z``, or with a space for the T), else ``string``;
- objects or arrays (alone or among other kinds): ``json``; other scalars mixed: ``string`` (their text);
- null only: ``string``, commented: no value says what it is.

A field whose column name would be refused (not ``[a-z_][a-z0-9_]*`` lowercased, the partition's name, or the
same as an earlier field's once lowercased) is printed commented out, with why. With the source's declared
columns at hand, a line says where the inference differs: accepting drift is editing the sources file.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from apilake.config import COLUMN_NAME, RESERVED_COLUMNS, ColumnType, column_name
from apilake.exceptions import ApilakeError
from apilake.lake import source_prefix
from apilake.records import KINDS, kind_of

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)


def is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def is_timestamp(text: str) -> bool:
    if not _TIMESTAMP.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass
class FieldSeen:
    """What the records held in one top-level field."""

    kinds: set[str] = field(default_factory=set)
    dates: bool = True  # every string seen is a date
    timestamps: bool = True  # every string seen is a timestamp

    def note(self, value: Any) -> None:
        kind = kind_of(value)
        self.kinds.add(kind)
        if kind == "string":
            if self.dates:
                self.dates = is_date(value)
            if self.timestamps:
                self.timestamps = is_timestamp(value)

    @property
    def ordered_kinds(self) -> list[str]:
        return sorted(self.kinds, key=KINDS.index)

    @property
    def type(self) -> ColumnType:
        kinds = self.kinds - {"null"}
        if kinds & {"object", "array"}:
            return ColumnType.JSON
        if kinds == {"integer"}:
            return ColumnType.BIGINT
        if kinds and kinds <= {"integer", "number"}:
            return ColumnType.DOUBLE
        if kinds == {"boolean"}:
            return ColumnType.BOOLEAN
        if kinds == {"string"} and self.dates:
            return ColumnType.DATE
        if kinds == {"string"} and self.timestamps:
            return ColumnType.TIMESTAMP
        return ColumnType.STRING


@dataclass
class Inference:
    source: str
    root: Path  # the source's raw folder
    pages: int = 0
    records: int = 0
    dates: set[str] = field(default_factory=set)  # the ingestion dates read
    fields: dict[str, FieldSeen] = field(default_factory=dict)  # in the order first seen


def pages_of(lake: Path, source: str) -> Iterator[Path]:
    """The source's landed pages in the lake folder, in key order."""
    root = lake / source_prefix(source)
    if not root.is_dir():
        raise ApilakeError(
            f"schema infer: no landed pages of {source!r} in {root} (run it first: apilake run --local, or the demo)"
        )
    yield from sorted(root.rglob("*.json.gz"))


def infer(lake: Path, source: str) -> Inference:
    """The fields of every record of ``source`` in the lake folder ``lake``."""
    found = Inference(source, lake / source_prefix(source))
    for page in pages_of(lake, source):
        found.pages += 1
        found.dates.update(part.partition("=")[2] for part in page.parts if part.startswith("ingestion_date="))
        try:
            with gzip.open(page, "rt", encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        _note(found, json.loads(line))
        except (OSError, ValueError) as exc:
            raise ApilakeError(f"schema infer: {page}: not gzip NDJSON ({exc})") from exc
    if not found.records:
        raise ApilakeError(f"schema infer: the landed pages of {source!r} in {found.root} hold no record")
    return found


def _note(found: Inference, record: Any) -> None:
    found.records += 1
    if isinstance(record, dict):
        for name, value in record.items():
            found.fields.setdefault(name, FieldSeen()).note(value)


def render(found: Inference, declared: Mapping[str, ColumnType] | None = None) -> str:
    """The ``columns:`` block (YAML, to go under the source in the sources file), with comments."""
    dates = sorted(found.dates)
    span = f"{dates[0]}..{dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "?")
    lines = [
        f"# apilake schema infer --source {found.source}: {found.records:,} records in {found.pages:,} pages "
        f"(ingestion dates {span})",
        "columns:",
    ]
    if not found.fields:
        raise ApilakeError(f"schema infer: the records of {found.source!r} are not JSON objects: no field to declare")
    columns: dict[str, str] = {}
    for name, seen in found.fields.items():
        entry = yaml.safe_dump({name: str(seen.type)}, default_flow_style=False, allow_unicode=True).strip()
        notes = []
        if seen.kinds <= {"null"}:
            notes.append("null only: no value says its type")
        elif seen.type in (ColumnType.STRING, ColumnType.JSON) and len(seen.kinds - {"null"}) > 1:
            notes.append("seen as " + ", ".join(seen.ordered_kinds))
        if declared is not None and name in declared and declared[name] != seen.type:
            notes.append(f"declared: {declared[name]}")
        elif declared is not None and name not in declared and seen.kinds - {"null"}:
            notes.append("not declared")
        refused = _refused(name, columns)
        if refused:
            lines.append(f"  # {entry}  # {refused}")
            continue
        columns[column_name(name)] = name
        lines.append(f"  {entry}" + (f"  # {'; '.join(notes)}" if notes else ""))
    for name, kind in (declared or {}).items():
        if name not in found.fields:
            lines.append(f"  # {name}: {kind}  # declared, never seen")
    return "\n".join(lines)


def _refused(name: str, columns: Mapping[str, str]) -> str | None:
    """Why the sources file would refuse ``name`` as a field of ``columns`` (None: it would not)."""
    column = column_name(name)
    if not COLUMN_NAME.fullmatch(column):
        return f"not curated: its column name {column!r} is not [a-z_][a-z0-9_]*"
    if column in RESERVED_COLUMNS:
        return f"not curated: {column!r} is the curated table's partition"
    if column in columns:
        return f"not curated: the same column as {columns[column]!r} once lowercased"
    return None
