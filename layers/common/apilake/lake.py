"""The S3 raw zone: deterministic keys, gzip NDJSON, and writes that skip unchanged content."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

RAW_PREFIX = "raw"
# A .json.gz file, not a Content-Encoding: readers that honour Content-Encoding would unzip it on the
# fly and then fail on a name that promises gzip (Athena and DuckDB go by the name).
CONTENT_TYPE = "application/gzip"


NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


def is_not_found(error: ClientError) -> bool:
    """True when S3 said the key does not exist (GET says NoSuchKey, HEAD a bare 404)."""
    return error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES


def source_prefix(source: str) -> str:
    return f"{RAW_PREFIX}/source={source}/"


def page_key(source: str, ingestion_date: date, shard: str, page: int) -> str:
    """The object key of one page: a pure function of (source, ingestion date, shard, page)."""
    return f"{source_prefix(source)}ingestion_date={ingestion_date.isoformat()}/shard={shard}/page={page:05d}.json.gz"


def to_ndjson(records: list[Any]) -> bytes:
    """One JSON record a line, keys in their original order, UTF-8."""
    return b"".join(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for rec in records)


@dataclass(frozen=True)
class WriteResult:
    key: str
    sha256: str
    records: int
    bytes_written: int  # compressed size of the object; 0 when the content was unchanged
    written: bool


class LakeWriter:
    """Writes pages to the lake bucket. The content hash (of the NDJSON) is kept in the object's
    metadata, so a page whose content did not change is not rewritten (same ETag, same LastModified)."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def write_page(self, key: str, records: list[Any], metadata: dict[str, str]) -> WriteResult:
        body = to_ndjson(records)
        digest = hashlib.sha256(body).hexdigest()
        if self._stored_sha256(key) == digest:
            return WriteResult(key=key, sha256=digest, records=len(records), bytes_written=0, written=False)
        # mtime=0: the same records always give the same bytes.
        compressed = gzip.compress(body, compresslevel=6, mtime=0)
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=compressed,
            ContentType=CONTENT_TYPE,
            Metadata={**metadata, "sha256": digest, "record-count": str(len(records))},
        )
        return WriteResult(key=key, sha256=digest, records=len(records), bytes_written=len(compressed), written=True)

    def _stored_sha256(self, key: str) -> str | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        stored = head.get("Metadata", {}).get("sha256")
        return str(stored) if stored else None
