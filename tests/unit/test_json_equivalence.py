"""Pages parsed and encoded by orjson: what Python's json gives, for every input json reads or refuses (parsing),
and the same NDJSON bytes but where docs/decisions.md says otherwise (encoding: floats of 1e-9 <= |x| < 1e-4,
NaN and Infinity)."""

from __future__ import annotations

import gzip
import json
import math
import random
import struct
from typing import Any

import pytest

from apilake import records as records_module
from apilake.lake import encode_page
from apilake.records import LazyRecords, extract_records, parse_document


def same(found: Any, expected: Any) -> bool:
    """Equal, of exactly the same types, floats to the bit (NaN is NaN, -0.0 is not 0.0), keys in the same order."""
    if isinstance(found, LazyRecords):
        found = list(found)
    if type(found) is not type(expected):
        return False
    if isinstance(expected, float):
        return struct.pack("<d", found) == struct.pack("<d", expected)
    if isinstance(expected, dict):
        return list(found) == list(expected) and all(same(found[key], expected[key]) for key in expected)
    if isinstance(expected, list):
        return len(found) == len(expected) and all(same(f, e) for f, e in zip(found, expected, strict=True))
    return bool(found == expected)


@pytest.fixture(params=["whole", "lazy"])
def parsing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: a page parsed whole, and a large page whose records are parsed one at a time."""
    if request.param == "lazy":
        monkeypatch.setattr(records_module, "LAZY_ABOVE_BYTES", 0)
    return str(request.param)


# Values json reads that orjson refuses or reads otherwise, and their neighbours that both read alike.
EDGE_VALUES = {
    "u64 max": "18446744073709551615",
    "beyond u64": "18446744073709551616",
    "i64 min": "-9223372036854775808",
    "below i64": "-9223372036854775809",
    "19 digits": "9999999999999999999",
    "40 digits": "1" + "0" * 39,
    "-40 digits": "-" + "9" * 40,
    "beyond u64, exponent": "18446744073709551616e0",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "beyond a double": "1e400",
    "just beyond a double": "1.7976931348623159e308",
    "the largest double": "1.7976931348623157e308",
    "below a double": "1e-400",
    "subnormal": "4.9406564584124654e-324",
    "halfway": "2.4703282292062328e-324",
    "long mantissa": "0." + "1" * 60,
    "17 digits": "9007199254740993",
    "-0": "-0",
    "-0.0": "-0.0",
    "exponent": "1E+2",
    "lone high surrogate": '"\\ud800"',
    "lone low surrogate": '"\\udc00"',
    "reversed pair": '"\\udc00\\ud800"',
    "surrogate pair": '"\\ud83d\\ude00"',
    "NUL escaped": '"\\u0000"',
    "escapes": '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    "raw non-ASCII": '"é 漢 😀 \u2028 \x7f"',
    "digits in a string": '"-12345678901234567890123"',
    "lone surrogate key": '{"\\ud800": 1}',
    "duplicate keys": '{"a": 1, "b": 2, "a": [3]}',
}


@pytest.mark.parametrize("value", EDGE_VALUES.values(), ids=EDGE_VALUES.keys())
def test_a_page_of_edge_values_is_parsed_as_json_parses_it(parsing: str, value: str) -> None:
    # Given a page with the value as a record, in a record, and beside the records
    text = f'{{"meta": {{"v": {value}}}, "data": [{value}, {{"v": {value}}}, [{value}]], "n": {value}}}'
    # When it is parsed / Then it is what json.loads gives: values, types, floats to the bit
    document = parse_document(text.encode(), "data")
    assert same(document, json.loads(text))
    assert same(extract_records(document, "data"), json.loads(text)["data"])


def outcome(parse: Any, body: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return type(exc).__name__, str(exc)


# Bodies json reads or refuses as bytes: encodings, byte order marks, broken UTF-8, broken JSON.
BODIES = {
    "UTF-16 LE": '{"data": [1, "é"]}'.encode("utf-16-le"),
    "UTF-16 BE with BOM": '{"data": [1, "é"]}'.encode("utf-16"),
    "UTF-32": '{"data": [1, "é"]}'.encode("utf-32"),
    "UTF-16 wide integer": b'{"data": [-18446744073709551616]}'.decode().encode("utf-16-le"),
    "UTF-8 BOM": b'\xef\xbb\xbf{"data": [1]}',
    "invalid UTF-8": b'{"data": ["\xff"]}',
    "encoded surrogate": b'{"data": ["\xed\xa0\x80"]}',
    "overlong encoding": b'{"data": ["\xc0\xaf"]}',
    "truncated UTF-8": b'{"data": ["\xe6\xbc"]}',
    "control character": b'{"data": ["a\x01b"]}',
    "trailing comma": b'{"data": [1,]}',
    "leading zero": b'{"data": [01]}',
    "single quotes": b"{'data': [1]}",
    "nan lowercase": b'{"data": [nan]}',
    "form feed": b'{"data":\x0c[1]}',
    "no-break space": b'{"data":\xc2\xa0[1]}',
    "NUL after": b'{"data": [1]}\x00',
    "extra data": b'{"data": [1]} {}',
    "empty": b"",
    "whitespace only": b" \n\t\r",
    "a bare string": b'"data"',
    "a bare number": b"12345678901234567890",
    "unclosed string": b'{"data": ["abc',
    "bad escape": b'{"data": ["\\x41"]}',
    "truncated escape": b'{"data": ["\\u12"]}',
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_body_is_read_or_refused_as_json_reads_or_refuses_it(body: bytes) -> None:
    # Given a page body json reads, or refuses (as bytes) / When it is parsed whole
    found, expected = outcome(lambda b: parse_document(b, "data"), body), outcome(json.loads, body)
    # Then it is what json.loads gives, or the error it raises, with the same text
    assert found[0] == expected[0]
    assert same(found[1], expected[1]) if found[0] == "value" else found == expected


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_large_body_is_read_or_refused_as_json_reads_or_refuses_it(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a page body parsed lazily (its records one at a time): the error kind is json's (its text says
    # where the scan stopped, which may differ), but that a large page is decoded strictly (as before): a
    # surrogate encoded in UTF-8, which json.loads lets pass, is an error
    monkeypatch.setattr(records_module, "LAZY_ABOVE_BYTES", 0)
    found, expected = outcome(lambda b: parse_document(b, "data"), body), outcome(json.loads, body)
    assert found[0] == ("UnicodeDecodeError" if body == BODIES["encoded surrogate"] else expected[0])
    if found[0] == "value":
        assert same(found[1], expected[1])


def mutations(seed: int, count: int) -> list[bytes]:
    """Pages of edge values, each with a byte or a few changed, inserted or dropped (seeded: the same every run)."""
    rng = random.Random(seed)
    pages = [f'{{"data": [{v}, {{"k": [{v}, "x"]}}], "n": {v}}}'.encode() for v in EDGE_VALUES.values()]
    alphabet = b'0123456789-+.eE"\\[]{},: \nuNaIfy\xc3\xa9\xed\xa0\x80\xff'
    found = []
    for _ in range(count):
        page = bytearray(rng.choice(pages))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(page))
            kind = rng.randrange(3)
            if kind == 0:
                page[at] = rng.choice(alphabet)
            elif kind == 1:
                page[at:at] = bytes([rng.choice(alphabet)]) * rng.randint(1, 25)
            else:
                del page[at]
        found.append(bytes(page))
    return found


@pytest.mark.parametrize("seed", range(4))
def test_damaged_pages_are_read_or_refused_as_json_reads_or_refuses_them(seed: int) -> None:
    for body in mutations(seed, 500):
        found, expected = outcome(lambda b: parse_document(b, "data"), body), outcome(json.loads, body)
        assert found[0] == expected[0], body
        assert same(found[1], expected[1]) if found[0] == "value" else found == expected, body


def test_a_run_of_digits_across_the_screened_pieces_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given pages screened for wide integers in pieces of 64 bytes, with a wide integer at every offset
    monkeypatch.setattr(records_module, "_SCREENED_BYTES", 64)
    for offset in range(100):
        text = '{"data": [' + " " * offset + "-18446744073709551616]}"
        # Then each is read as json reads it (an int, not orjson's float)
        assert same(parse_document(text.encode(), "data"), json.loads(text)), offset


# -- encoding -----------------------------------------------------------------------------------------


def ndjson(records: list[Any]) -> bytes:
    return gzip.decompress(encode_page(records)[1])


def json_line(record: Any) -> bytes:
    """The line json writes (the lake's encoding before orjson)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def nested(depth: int) -> list[Any]:
    top: list[Any] = []
    inner = top
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return top


AS_JSON = {
    "escapes": {"s": '"\\\x00\x01\x08\x0c\x1f\x7f/\u2028\u2029\ufeff\ufffe'},
    "non-ASCII": {"é": "漢字 😀", 'k\n"': "ü"},
    "every code point": {"s": "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)},
    "64-bit ints": [0, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)],
    "beyond 64 bits": [2**64, -(2**63) - 1, 10**40],
    "literals": [True, False, None, {}, []],
    "floats": [0.0, -0.0, 1.5, 0.1, 1e-4, 0.0001234, 9.99e-10, 1e-10, 5e-324, 1e15, 1e16, 1e22, 1.7976931348623157e308],
    "non-string keys": {1: "a", 2.5: "b", False: "c", None: "d"},
    "254 levels": nested(254),
    "255 levels": nested(255),
    "600 levels": nested(600),
    "a tuple": {"t": (1, "x")},
}


@pytest.mark.parametrize("record", AS_JSON.values(), ids=AS_JSON.keys())
def test_a_record_is_written_as_json_writes_it(record: Any) -> None:
    assert ndjson([record, record]) == json_line(record) * 2


DIFFERENT = {
    "1e-05": (1e-05, b"0.00001"),
    "-9.99e-05": (-9.99e-05, b"-0.0000999"),
    "1.5e-05": (1.5e-05, b"0.000015"),
    "1e-06": (1e-06, b"1e-6"),
    "-2.5e-07": (-2.5e-07, b"-2.5e-7"),
    "1e-09": (1e-09, b"1e-9"),
    "NaN": (math.nan, b"null"),
    "Infinity": (math.inf, b"null"),
    "-Infinity": (-math.inf, b"null"),
}


@pytest.mark.parametrize(("value", "written"), DIFFERENT.values(), ids=DIFFERENT.keys())
def test_small_floats_are_written_without_exponent_padding_and_nan_as_null(value: float, written: bytes) -> None:
    # Given a record with a float json writes otherwise / When it is written / Then it is orjson's form
    assert ndjson([{"v": value}]) == b'{"v":' + written + b"}\n" != json_line({"v": value})
    # And a reader reads the same number back (NaN and Infinity, which are not JSON: null)
    assert json.loads(written) == (value if math.isfinite(value) else None)


def test_floats_are_written_as_json_writes_them_but_between_1e_9_and_1e_4() -> None:
    # Given floats of every magnitude (random bits, and random digits scaled by powers of ten)
    rng = random.Random(5)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    values += [rng.random() * 10.0 ** rng.randint(-12, 20) for _ in range(20_000)]
    values = [v for v in values if math.isfinite(v)]
    # When they are written
    lines = ndjson(values).splitlines(keepends=True)
    # Then each is json's line but for 1e-9 <= |x| < 1e-4, and reads back to the same float
    for value, line in zip(values, lines, strict=True):
        assert (line == json_line(value)) != (1e-9 <= abs(value) < 1e-4), value
        assert same(json.loads(line), value), value


@pytest.mark.parametrize(
    ("record", "error"),
    [({"s": "\ud800"}, UnicodeEncodeError), ({"s": ["x", "\udfff"]}, UnicodeEncodeError), ({"d": object()}, TypeError)],
    ids=["lone surrogate", "lone surrogate in a list", "not JSON"],
)
def test_a_record_json_cannot_write_fails_as_before(record: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        json_line(record)
    with pytest.raises(error):
        encode_page([{"ok": 1}, record])
