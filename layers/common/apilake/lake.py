"""The S3 raw zone: deterministic keys, gzip NDJSON, and writes that skip unchanged content."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from botocore.exceptions import ClientError

RAW_PREFIX = "raw"
# A .json.gz file, not a Content-Encoding: readers that honour Content-Encoding would unzip it on the
# fly and then fail on a name that promises gzip (Athena and DuckDB go by the name).
CONTENT_TYPE = "application/gzip"


NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
# A conditional create (If-None-Match: *) lost: the key exists (412), or another write of it was in flight (409).
ALREADY_EXISTS_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def is_not_found(error: ClientError) -> bool:
    """True when S3 said the key does not exist (GET says NoSuchKey, HEAD a bare 404)."""
    return error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES


def create_if_absent(s3_client: Any, bucket: str, key: str, body: bytes, **put: Any) -> bool:
    """Create ``key`` only if no object has it (an S3 conditional write, ``If-None-Match: *``).

    True when this call created it; False when the key exists (412 PreconditionFailed) or another
    write of it was in flight (409 ConditionalRequestConflict): either way another writer holds the
    key, and the caller reads what is there. ``put`` carries the other ``PutObject`` parameters.
    """
    try:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", **put)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ALREADY_EXISTS_CODES:
            return False
        raise
    return True


def source_prefix(source: str) -> str:
    return f"{RAW_PREFIX}/source={source}/"


def page_key(source: str, ingestion_date: date, shard: str, page: int) -> str:
    """The object key of one page: a pure function of (source, ingestion date, shard, page)."""
    return f"{source_prefix(source)}ingestion_date={ingestion_date.isoformat()}/shard={shard}/page={page:05d}.json.gz"


# A record's NDJSON line is orjson's (a few times faster than json's): the line
# json.dumps(record, ensure_ascii=False, separators=(",", ":")) writes but for (docs/decisions.md)
# - floats of 1e-9 <= |x| < 1e-4: 0.00001 and 1e-7 where json writes 1e-05 and 1e-07 (the same numbers to a reader);
# - NaN and Infinity: null, where json writes NaN and Infinity, which are not JSON (no reader could read the page);
# - values no JSON parse gives (datetimes, UUIDs, dataclasses, enums): orjson writes some that json refuses.
# What orjson refuses, json writes: integers beyond 64 bits, non-string keys, records nested over 254 levels, and
# a string with a lone surrogate (whose line then fails to encode, as before).
_ORJSON_OPTIONS = orjson.OPT_APPEND_NEWLINE
# One json encoder for those (json.dumps builds one per call when given options).
_encode_record = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# The NDJSON is hashed and compressed in chunks of about this size: a call per chunk, not per record, and a
# large page's uncompressed NDJSON is still never held whole.
ENCODE_CHUNK_BYTES = 256 * 1024


def encode_page(records: Iterable[Any]) -> tuple[str, bytes]:
    """(sha256 of the NDJSON, the NDJSON gzipped), in one pass: the uncompressed NDJSON of a large
    page is never held in memory whole. The gzip header carries no time, so the same records always
    give the same bytes."""
    hasher = hashlib.sha256()
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    lines: list[bytes] = []
    pending = 0
    for record in records:
        try:
            line = orjson.dumps(record, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            line = _encode_record(record).encode() + b"\n"
        lines.append(line)
        pending += len(line)
        if pending >= ENCODE_CHUNK_BYTES:
            chunk = b"".join(lines)
            hasher.update(chunk)
            parts.append(compressor.compress(chunk))
            lines, pending = [], 0
    chunk = b"".join(lines)
    hasher.update(chunk)
    parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return hasher.hexdigest(), b"".join(parts)


@dataclass(frozen=True)
class WriteResult:
    key: str
    sha256: str
    records: int
    bytes_written: int  # compressed size of the object; 0 when the content was unchanged
    written: bool


class LakeWriter:
    """Writes pages to the lake bucket. The content hash (of the NDJSON) is kept in the object's
    metadata, so a page whose content did not change is not rewritten (same ETag, same LastModified).

    A page is first written as a conditional create (``If-None-Match: *``): a new page, the common
    case, costs one request. Only when the key exists (a redelivery, a rerun of the same date) is
    the stored hash read, and the page overwritten if its content changed.
    """

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def write_page(self, key: str, records: Sequence[Any], metadata: dict[str, str]) -> WriteResult:
        digest, compressed = encode_page(records)
        written = WriteResult(key=key, sha256=digest, records=len(records), bytes_written=len(compressed), written=True)
        headers = {
            "ContentType": CONTENT_TYPE,
            "Metadata": {**metadata, "sha256": digest, "record-count": str(len(records))},
        }
        if create_if_absent(self._s3, self.bucket, key, compressed, **headers):
            return written
        if self._stored_sha256(key) == digest:
            return WriteResult(key=key, sha256=digest, records=len(records), bytes_written=0, written=False)
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=compressed, **headers)
        return written

    def _stored_sha256(self, key: str) -> str | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        stored = head.get("Metadata", {}).get("sha256")
        return str(stored) if stored else None
