"""Large pages: records kept as JSON text and parsed one at a time give what a whole parse gives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apilake import records as records_module
from apilake.exceptions import BadResponseError
from apilake.lake import encode_page
from apilake.records import MAX_DEPTH, LazyRecords, NestingError, extract_records, parse_document


def materialized(value: Any) -> Any:
    """The document with every LazyRecords turned into a list."""
    if isinstance(value, LazyRecords):
        return list(value)
    if isinstance(value, dict):
        return {key: materialized(item) for key, item in value.items()}
    return value


@pytest.fixture
def lazy_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "LAZY_ABOVE_BYTES", 0)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"data": [{"id": 1}, {"id": 2}], "meta": {"total": 2}}', "data"),
        ('[{"id": 1, "é": "ü"}, [1, 2], "x", 3.5, null, true]', ""),
        (
            ' \n{ "meta" : {"next": "c2"} ,\n "result" : { "items" : [ {"a": {"b": [1, {"c": 2}]}} , {} ] } }\n ',
            "result.items",
        ),
        ('{"data": [], "links": {"next": null}}', "data"),
        ('{"data": [1], "data": [{"id": "last wins"}]}', "data"),
        ('{"data": {"id": 1}}', "data"),
        ('{"meta": {}}', "data"),
        ('{"pages": [[{"id": 1}]]}', "pages.0"),
        ('{"data": [NaN, Infinity, "\\u00e9\\ud83d\\ude00"]}', "data"),
    ],
    ids=[
        "nested object",
        "root array",
        "whitespace and depth",
        "empty",
        "duplicate key",
        "records not a list",
        "records missing",
        "list index path",
        "escapes and NaN",
    ],
)
def test_a_lazily_parsed_page_is_the_page_parsed_whole(lazy_everywhere: None, text: str, path: str) -> None:
    # Given a page body and its source's records path, parsed lazily
    document = parse_document(text.encode(), path)
    # Then the document is what json.loads gives, and so are the records found in it (or the error)
    assert json.dumps(materialized(document)) == json.dumps(json.loads(text))  # dumps: NaN != NaN
    try:
        expected: Any = extract_records(json.loads(text), path)
    except BadResponseError as exc:
        with pytest.raises(BadResponseError, match=str(exc)):
            extract_records(document, path)
        return
    found = extract_records(document, path)
    assert encode_page(found) == encode_page(expected)
    assert len(found) == len(expected) and found[1:] == list(expected[1:])


@pytest.mark.parametrize(
    "text",
    [
        '{"data": [{"id": 1}, {"id": 2]}',
        '{"data": [1, 2] "x": 1}',
        '{"data": [1, 2]} trailing',
        '{"data": [1 2]}',
        "{1: 2}",
    ],
    ids=["broken record", "missing comma", "extra data", "missing comma in records", "non-string key"],
)
def test_a_broken_large_page_is_not_json(lazy_everywhere: None, text: str) -> None:
    with pytest.raises(ValueError):
        parse_document(text.encode(), "data")


def test_large_pages_are_lazy_and_small_ones_are_not() -> None:
    big = json.dumps({"data": [{"id": i, "name": "x" * 50} for i in range(20_000)]}).encode()
    assert len(big) > records_module.LAZY_ABOVE_BYTES
    assert isinstance(parse_document(big, "data")["data"], LazyRecords)
    assert isinstance(parse_document(b'{"data": [1]}', "data")["data"], list)


def objects(levels: int) -> str:
    """Objects ``levels`` deep, an array at the bottom: ``levels + 1`` levels."""
    return '{"a": ' * levels + "[1]" + "}" * levels


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-32"])
@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (objects(MAX_DEPTH - 1), False),
        (objects(MAX_DEPTH), True),
        ('{"data": [' + objects(MAX_DEPTH - 3) + "]}", False),
        ('{"data": [' + objects(MAX_DEPTH - 2) + "]}", True),
    ],
    ids=["objects at the limit", "objects one level over", "a record at the limit", "a record one level over"],
)
def test_objects_nested_deeper_than_the_limit_are_refused_in_every_encoding(
    lazy_everywhere: None, encoding: str, text: str, refused: bool
) -> None:
    # Given a page nested in objects MAX_DEPTH levels deep or one more, in an encoding json reads
    body = text.encode(encoding)
    if refused:
        with pytest.raises(NestingError):
            parse_document(body, "data")
    else:
        assert json.dumps(materialized(parse_document(body, "data"))) == json.dumps(json.loads(text))
