"""The curated step's staging (:mod:`apilake.curation`): an UNLOAD writes into a new, empty prefix of its own,
``curated-staging/source=<S>/ingestion_date=<D>/run=<R>/attempt=<n>/``, whose files are swapped into the date's
curated prefix once it SUCCEEDED: copied in, then the objects there before deleted, then the staged ones. The
live partition is never empty (briefly doubled, which ``_current`` dedups by id), and a failed or overlapping
UNLOAD never reaches it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from apilake.exceptions import ApilakeError
from apilake.observability import logger

STAGING_PREFIX = "curated-staging/"
_DELETE_BATCH = 1000  # DeleteObjects' limit


def staging_prefix(source: str, ingestion_date: date, run_id: str, attempt: int) -> str:
    """Where one attempt's UNLOAD writes: a new (empty) prefix per run and attempt."""
    day = ingestion_date.isoformat()
    return f"{STAGING_PREFIX}source={source}/ingestion_date={day}/run={run_id}/attempt={attempt}/"


def keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    """The keys under ``prefix``."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def delete(s3_client: Any, bucket: str, doomed: Sequence[str], prefix: str) -> None:
    """Delete ``doomed`` (keys under ``prefix``); an error naming the prefix when some were not deleted."""
    for first in range(0, len(doomed), _DELETE_BATCH):
        batch = [{"Key": key} for key in doomed[first : first + _DELETE_BATCH]]
        errors = s3_client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors")
        if errors:
            shown = "; ".join(f"{error.get('Key')}: {error.get('Message')}" for error in errors[:3])
            raise ApilakeError(f"s3://{bucket}/{prefix}: {len(errors)} objects not deleted ({shown})")


def swap(s3_client: Any, bucket: str, staged: str, live: str) -> int:
    """Copy the objects under ``staged`` into ``live``, then delete the objects ``live`` held before and the staged
    ones; the number swapped in. Repeated after a stop, it copies to the same keys and deletes the same objects;
    nothing staged (an UNLOAD of no rows, or a swap that already ended) leaves ``live`` as it is."""
    new = keys(s3_client, bucket, staged)
    if not new:
        logger.warning("nothing staged: the curated prefix is left as it is", extra={"staged": staged, "live": live})
        return 0
    before = keys(s3_client, bucket, live)
    targets = {key: live + key[len(staged) :] for key in new}
    for key, target in targets.items():
        s3_client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
    copied = set(targets.values())
    delete(s3_client, bucket, [key for key in before if key not in copied], live)
    delete(s3_client, bucket, new, staged)
    return len(new)
