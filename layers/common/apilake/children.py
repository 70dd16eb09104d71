"""Parent-child sources at run time: the work a landed parent page announces, and a child's request.

Each record of a parent page gives one child work item: page 1 of a child shard, carrying the record's values
for the child's placeholders (``WorkItem.parent_values``). The shard is named from those values
(:func:`child_shard`), so a parent record listed twice (two pages, two parent shards, a redelivery) announces
the same shard and its pages land under the same keys once. The child's request is its source with the
placeholders filled (:func:`bind`): in the path, each value is one path segment, percent-encoded whole (a ``/``
in a value is ``%2F``, never a new segment); in the params, the value as it is (the query string is encoded
when sent).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from apilake.config import Source
from apilake.exceptions import BadResponseError, InvalidMessageError
from apilake.messages import CHILD_SHARD_PREFIX, PARENT_VALUE_CHARS, WorkItem
from apilake.param_text import param_text
from apilake.parent_config import fill, placeholders
from apilake.records import find_optional
from apilake.request_body import with_texts

SLUG_CHARS = 40
# S3 user metadata holds 2 KB in all (keys and values); a page's other metadata takes some 200 bytes. Values whose
# JSON is longer go to the ledger's landed marker only, the metadata keeping their hash.
METADATA_VALUE_CHARS = 1024
HASH_CHARS = 16  # 64 bits: two parent records of one run collide once in some 10^19 pairs
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def child_shard(values: Mapping[str, str]) -> str:
    """The shard of a child source for these parent values: ``p-<slug>-<hash>``, the slug the values (in the
    order given) lowercased, each run of other characters one ``-``, cut to 40 characters (readable, never
    trusted), the hash the first 16 hex digits of the SHA-256 of the values as sorted JSON (what tells shards
    apart). Characters a key, a Hive partition and an SQS message all take as they are."""
    slug = _NOT_SLUG.sub("-", "-".join(values.values()).lower())[:SLUG_CHARS].strip("-")
    canonical = json.dumps(dict(sorted(values.items())), separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]
    return f"{CHILD_SHARD_PREFIX}{slug}-{digest}" if slug else f"{CHILD_SHARD_PREFIX}{digest}"


def parent_values(child: Source, record: Any, where: str) -> dict[str, str]:
    """The values of ``record`` (a parent record; ``where`` names it in errors) for ``child``'s placeholders.

    A missing or null field, a list or an object, or a value longer than a work item carries is a bad response
    of the parent: the parent page fails with the reason, before anything of it is written. A value that goes
    into the path must also be a usable path segment: not empty, not ``.`` or ``..``."""
    assert child.parent is not None
    in_path = set(placeholders(child.path))
    values: dict[str, str] = {}
    for name, path in child.parent.fields.items():
        value = find_optional(record, path) if isinstance(record, dict) else None
        problem = None
        if value is None:
            problem = "has no value"
        elif isinstance(value, dict | list):
            problem = f"holds a {'list' if isinstance(value, list) else 'JSON object'}, not a value"
        else:
            text = param_text(value)
            if len(text) > PARENT_VALUE_CHARS:
                problem = f"holds {len(text)} characters, more than the {PARENT_VALUE_CHARS} a work item carries"
            elif name in in_path and text in ("", ".", ".."):
                problem = f"holds {text!r}, which cannot be a path segment"
        if problem is not None:
            raise BadResponseError(
                f"{where} {problem} at {path!r} for {{{name}}} of child source '{child.name}'"
                + ("" if isinstance(record, dict) else " (the record is not a JSON object)")
            )
        values[name] = text
    return values


def announced(parent: WorkItem, child: Source, records: Sequence[Any]) -> list[WorkItem]:
    """Page 1 of each child shard the records of ``parent``'s page announce, once per shard, in record order."""
    items: dict[str, WorkItem] = {}
    for index, record in enumerate(records):
        values = parent_values(child, record, f"record {index + 1} of page {parent.page}")
        shard = child_shard(values)
        if shard not in items:
            items[shard] = WorkItem(
                run_id=parent.run_id,
                source=child.name,
                ingestion_date=parent.ingestion_date,
                shard=shard,
                page=1,
                parent_values=values,
            )
    return list(items.values())


def canonical_values(values: Mapping[str, str]) -> str:
    """The parent values as compact JSON, keys sorted, ASCII only (what S3 metadata, an HTTP header, takes)."""
    return json.dumps(dict(sorted(values.items())), separators=(",", ":"), ensure_ascii=True)


def parent_metadata(item: WorkItem) -> dict[str, str]:
    """The S3 metadata of a child page joining it to its parent record: ``parent-values``, the values as compact
    JSON, or, past :data:`METADATA_VALUE_CHARS`, ``parent-values-sha256``, the SHA-256 of that JSON (the values
    are in the page's landed marker). Nothing for a page of a source that is no child."""
    if item.parent_values is None:
        return {}
    text = canonical_values(item.parent_values)
    if len(text) <= METADATA_VALUE_CHARS:
        return {"parent-values": text}
    return {"parent-values-sha256": hashlib.sha256(text.encode()).hexdigest()}


def include_parent(source: Source, item: WorkItem, records: Sequence[Any]) -> Sequence[Any]:
    """``records`` with ``parent.include``'s fields added: ``_parent_<placeholder>`` -> the value (as sent, text)
    at the top of each record. A record that is not a JSON object, or already has such a field, fails the page
    (a bad response): the field would be lost or would overwrite the vendor's. Other sources' records as they are.
    """
    fields = source.parent.included_fields() if source.parent is not None else {}
    if not fields or item.parent_values is None:
        return records
    added = {field: item.parent_values[name] for name, field in fields.items() if name in item.parent_values}
    included = []
    for index, record in enumerate(records):
        where = f"record {index + 1} of page {item.page} of child source '{source.name}'"
        if not isinstance(record, dict):
            raise BadResponseError(f"{where} is not a JSON object: parent.include cannot add {', '.join(added)}")
        if clash := sorted(set(record) & set(added)):
            raise BadResponseError(f"{where} already has {', '.join(clash)}, the field parent.include adds")
        included.append({**record, **added})
    return included


def bind(source: Source, item: WorkItem) -> Source:
    """``source`` as ``item`` asks for it: a child's placeholders filled with the item's parent values (each one
    path segment in the path, as it is in the params and in the body's texts, a JSON string); any other source
    as it is."""
    values = item.parent_values
    if source.parent is None:
        return source
    if values is None or set(values) != set(source.parent.fields):
        raise InvalidMessageError(
            f"a page of child source '{source.name}' needs the values of {', '.join(source.parent.fields)}; "
            f"the message carries {', '.join(values or {}) or 'none'}"
        )
    segments = {name: quote(value, safe="") for name, value in values.items()}
    return source.model_copy(
        update={
            "path": fill(source.path, segments),
            "params": {name: fill(value, values) for name, value in source.params.items()},
            "body": with_texts(source.body, lambda text: fill(text, values)),
        }
    )
