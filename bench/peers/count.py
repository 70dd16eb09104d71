"""What a contender landed: every record of every output file, by id, against the ids the fake API
serves. A file is gzip or plain; it holds either a page as the API sent it ({"data": [...]}) or
JSON lines, one record each (apilake's pages, dlt's tables)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Landed:
    files: int
    records: int  # every record found, repeats included
    missing: int  # expected ids found nowhere
    repeated: int  # records beyond the first of their id
    unexpected: int  # records whose id the API never served

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.repeated == 0 and self.unexpected == 0

    def describe(self) -> str:
        if self.exactly_once:
            return f"{self.records:,} records in {self.files:,} files, each once"
        return (
            f"NOT exactly once: {self.records:,} records in {self.files:,} files, {self.missing:,} missing, "
            f"{self.repeated:,} repeated, {self.unexpected:,} unexpected"
        )


def expected_ids(datasets: Iterable[str], records_per_dataset: int) -> set[str]:
    """The ids the fake API serves (apilake_dev.vendors.fake.Dataset.record)."""
    return {f"{name}-{index:07d}" for name in datasets for index in range(records_per_dataset)}


def records_of(blob: bytes) -> Iterator[dict[str, Any]]:
    data = gzip.decompress(blob) if blob[:2] == GZIP_MAGIC else blob
    text = data.decode()
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n" not in stripped.rstrip():
        whole = json.loads(stripped)
        if isinstance(whole.get("data"), list):
            yield from whole["data"]
            return
        yield whole
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def tally(blobs: Iterable[bytes], expected: set[str], id_field: str = "id") -> Landed:
    seen: Counter[str] = Counter()
    files = 0
    for blob in blobs:
        files += 1
        for record in records_of(blob):
            seen[str(record.get(id_field))] += 1
    records = sum(seen.values())
    return Landed(
        files=files,
        records=records,
        missing=len(expected - seen.keys()),
        repeated=sum(n - 1 for n in seen.values() if n > 1),
        unexpected=sum(n for key, n in seen.items() if key not in expected),
    )


def folder_blobs(root: Path, keep: Callable[[Path], bool] = lambda _: True) -> Iterator[bytes]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and keep(path.relative_to(root)):
            yield path.read_bytes()


def bucket_blobs(s3: Any, bucket: str, prefix: str = "") -> Iterator[bytes]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()


def dlt_tables(resources: Iterable[str]) -> Callable[[Path], bool]:
    """dlt's files of the resources' own tables (not their child tables such as ``<name>__tags``, nor
    dlt's ``_dlt_*`` tables): <dataset>/<table>/<load id>.<file id>.jsonl.gz."""
    names = set(resources)
    return lambda relative: len(relative.parts) >= 2 and relative.parts[-2] in names
