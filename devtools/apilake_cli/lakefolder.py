"""The lake as files: a mirror of the bucket in a local folder (same keys, same layout), and which folder a command
reads (``--lake``, else ``<home>/lake``). The folder is read as a bucket through apilake.folder_store.FolderClient,
the one reader of that layout (listings walk only the prefix's folder)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

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


def local_lake(args: argparse.Namespace) -> Path:
    """The lake folder a command reads: ``--lake``, else ``<home>/lake``."""
    lake: Path | None = getattr(args, "lake", None)
    return lake if lake is not None else Path(args.home) / "lake"
