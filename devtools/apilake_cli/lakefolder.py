"""The lake as files: a mirror of the bucket in a local folder (same keys, same layout), and a
read-only S3-shaped view of that folder so `apilake status` reads the ledger after the emulator is gone."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from apilake.folder_store import META_FOLDER, writing

MIRRORED_PREFIXES = ("raw/", "ledger/")


def mirror(s3: Any, bucket: str, folder: Path, prefixes: tuple[str, ...] = MIRRORED_PREFIXES) -> int:
    """Copy every object under ``prefixes`` to ``folder/<key>``, each file's modification time its object's
    (the latest run is the newest manifest, in the folder as in the bucket); returns the files written. The folder's
    writer lock is held meanwhile (apilake.folder_store: an `apilake ingest` writing it fails fast, and this fails
    fast while one does), and a rewritten key's metadata sidecar (an `apilake ingest`'s) is removed: no sha256 vouches
    for bytes it was not computed on."""
    written = 0
    paginator = s3.get_paginator("list_objects_v2")
    with writing(folder):
        for prefix in prefixes:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    target = folder / obj["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    (folder / META_FOLDER / f"{obj['Key']}.json").unlink(missing_ok=True)
                    target.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                    modified = obj["LastModified"].timestamp()
                    os.utime(target, (modified, modified))
                    written += 1
    return written


class _Paginator:
    def __init__(self, root: Path) -> None:
        self.root = root

    def paginate(self, Bucket: str, Prefix: str = "") -> Iterator[dict[str, Any]]:  # noqa: N803 - boto3's names
        files = sorted((p.relative_to(self.root).as_posix(), p) for p in self.root.rglob("*") if p.is_file())
        yield {
            "Contents": [{"Key": key, "LastModified": _modified(path)} for key, path in files if key.startswith(Prefix)]
        }


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


class FolderStore:
    """The two S3 reads the ledger's status and the run report need (listing, with each key's modification
    time, and reading), answered from a mirrored folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_paginator(self, operation: str) -> _Paginator:
        if operation != "list_objects_v2":
            raise ValueError(f"FolderStore lists objects only, not {operation}")
        return _Paginator(self.root)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        path = self.root / Key
        if not path.is_file():
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(path.read_bytes()), "LastModified": _modified(path)}
