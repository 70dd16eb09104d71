"""A local folder that answers the S3 calls the lake writer, the ledger, the marks and the run report make, with
the bucket's keys as paths: `apilake ingest --lake DIR` lands pages where `apilake status`, `apilake query` and
the curated step read them, in the layout a bucket has.

- Writes are atomic: a temporary file beside the target (its name starts with a dot, so no reader's glob and no
  listing sees it), then ``os.replace``; a conditional create (``IfNoneMatch="*"``) is an ``os.link`` of that
  file, which fails when the key exists, across processes too.
- An object's metadata (``Metadata``: the page's hash, record count, run) is a JSON file in a hidden tree beside
  the keys, ``.meta/<key>.json``, written after the object: a crash between the two leaves an object without
  metadata, which the lake writer rewrites (it cannot tell it unchanged), never metadata vouching for old bytes.
- ``ETag`` is the file's identity (inode, modification time in ns, size): it changes with every write, which is
  what a conditional ``IfMatch`` needs (the incremental marks); it is not the MD5 S3 gives.
- One process writes a folder at a time: its first write takes an exclusive ``fcntl.flock`` on ``<folder>/.lock``,
  held until the process ends (or :func:`release_folder`); a second process writing the folder fails at once with
  :class:`LakeFolderBusyError` (naming the holder's pid). Within the process, the folder's clients share the lock,
  and ``IfMatch`` is checked under one lock of the folder's: so a conditional write is one across processes too, and
  an object and its metadata are never interleaved with another writer's.
- A file's bytes are on disk (``fsync``) before it takes its key's name: after a power loss, a ledger marker never
  vouches for a page file that is empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from apilake.exceptions import ApilakeError

LOCK_FILE = ".lock"  # the writer's lock, at the folder's root (hidden: no key)
META_FOLDER = ".meta"  # the objects' metadata, at the folder's root: .meta/<key>.json
_LIST_PAGE = 1000  # keys per listing page, as S3's


def _error(code: str, operation: str, key: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": key}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


class LakeFolderBusyError(ApilakeError):
    """Another process writes the lake folder."""


class _WriterLock:
    """This process's exclusive lock on a lake folder, and the lock its threads check ``IfMatch`` under."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.guard = threading.Lock()
        path = root / LOCK_FILE
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise LakeFolderBusyError(
                f"lake folder {root}: another process writes it (pid {holder}, lock {path}): one writer a lake folder "
                "at a time; wait for it to end"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        os.close(self._fd)  # closing the descriptor releases the flock


_WRITERS: dict[Path, _WriterLock] = {}
_WRITERS_GUARD = threading.Lock()


def writer_lock(root: Path) -> _WriterLock:
    """This process's lock on the lake folder ``root``, taken now if not yet (held until :func:`release_folder` or
    the process ends); raises :class:`LakeFolderBusyError` when another process holds it."""
    root = root.resolve()
    with _WRITERS_GUARD:
        lock = _WRITERS.get(root)
        if lock is None:
            root.mkdir(parents=True, exist_ok=True)
            lock = _WRITERS[root] = _WriterLock(root)
        return lock


def release_folder(root: Path) -> None:
    """Let other processes write ``root`` again (this process's next write takes the lock again)."""
    with _WRITERS_GUARD:
        lock = _WRITERS.pop(root.resolve(), None)
    if lock is not None:
        lock.release()


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """The lake folder ``root`` this process's to write while the block lasts (released after, unless it held it
    before): a second writer fails fast."""
    held = root.resolve() in _WRITERS
    writer_lock(root)
    try:
        yield
    finally:
        if not held:
            release_folder(root)


def write_durably(path: Path, data: bytes | bytearray | memoryview) -> None:
    """``data`` in a new file ``path``, on disk (fsync) when this returns."""
    with path.open("xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _etag(stat: os.stat_result) -> str:
    return f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def _body_bytes(body: Any) -> bytes | bytearray | memoryview:
    if isinstance(body, bytes | bytearray | memoryview):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data: bytes = body.read()
        return data
    raise TypeError(f"folder store: a Body of {type(body).__name__} is not bytes")


class _Paginator:
    def __init__(self, store: FolderClient) -> None:
        self._store = store

    def paginate(self, Bucket: str, Prefix: str = "", **_: Any) -> Iterator[dict[str, Any]]:  # noqa: N803 - boto3's
        token: str | None = None
        while True:
            page = self._store.list_objects_v2(Bucket=Bucket, Prefix=Prefix, ContinuationToken=token)
            yield page
            token = page.get("NextContinuationToken")
            if not token:
                return


class FolderClient:
    """The S3 client of one folder (every ``Bucket`` is that folder). Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()

    # -- paths -----------------------------------------------------------------------------------------------
    def _path(self, key: str, operation: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts[:-1]):
            raise _error("InvalidKey", operation, key, 400)
        if parts[0] == META_FOLDER or parts[-1].startswith(".") or parts[-1] in ("", ".."):
            raise _error("InvalidKey", operation, key, 400)
        return self.root.joinpath(*parts)

    def _meta_path(self, key: str) -> Path:
        path = self.root.joinpath(META_FOLDER, *key.split("/"))
        return path.with_name(path.name + ".json")

    def _folder(self, path: Path) -> Path:
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        return folder

    def _temporary(self, path: Path, data: bytes | bytearray | memoryview) -> Path:
        """``data`` in a new file beside ``path`` (hidden: its name starts with a dot)."""
        temporary = self._folder(path) / f".{path.name}.tmp-{uuid.uuid4().hex}"
        write_durably(temporary, data)
        return temporary

    # -- writes ----------------------------------------------------------------------------------------------
    def put_object(
        self,
        *,
        Bucket: str,  # noqa: N803 - boto3's names
        Key: str,  # noqa: N803
        Body: Any,  # noqa: N803
        IfNoneMatch: str | None = None,  # noqa: N803
        IfMatch: str | None = None,  # noqa: N803
        Metadata: dict[str, str] | None = None,  # noqa: N803
        **_: Any,
    ) -> dict[str, Any]:
        path = self._path(Key, "PutObject")
        writer = writer_lock(self.root)
        temporary = self._temporary(path, _body_bytes(Body))
        try:
            if IfNoneMatch == "*":
                try:
                    path.hardlink_to(temporary)
                except FileExistsError:
                    raise _error("PreconditionFailed", "PutObject", Key, 412) from None
            elif IfMatch is not None:
                with writer.guard:
                    try:
                        current = _etag(path.stat())
                    except FileNotFoundError:
                        raise _error("NoSuchKey", "PutObject", Key, 404) from None
                    if current != IfMatch:
                        raise _error("PreconditionFailed", "PutObject", Key, 412)
                    temporary.replace(path)
            else:
                temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)
        self._write_meta(Key, Metadata)
        return {"ETag": _etag(path.stat())}

    def _write_meta(self, key: str, metadata: dict[str, str] | None) -> None:
        meta = self._meta_path(key)
        if not metadata:
            meta.unlink(missing_ok=True)
            return
        self._temporary(meta, json.dumps(metadata, separators=(",", ":")).encode()).replace(meta)

    def delete_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        writer_lock(self.root)
        for path in (self._path(Key, "DeleteObject"), self._meta_path(Key)):
            path.unlink(missing_ok=True)
        return {}

    # -- reads -----------------------------------------------------------------------------------------------
    def head_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        path = self._path(Key, "HeadObject")
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise _error("404", "HeadObject", Key, 404) from None
        return self._attributes(Key, stat)

    def get_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        path = self._path(Key, "GetObject")
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                data = file.read()
        except (FileNotFoundError, IsADirectoryError):
            raise _error("NoSuchKey", "GetObject", Key, 404) from None
        return {**self._attributes(Key, stat), "Body": io.BytesIO(data)}

    def _attributes(self, key: str, stat: os.stat_result) -> dict[str, Any]:
        try:
            metadata = json.loads(self._meta_path(key).read_bytes())
        except FileNotFoundError:
            metadata = {}
        return {
            "ContentLength": stat.st_size,
            "ETag": _etag(stat),
            "LastModified": _modified(stat),
            "Metadata": metadata,
        }

    def list_objects_v2(
        self,
        *,
        Bucket: str,  # noqa: N803 - boto3's names
        Prefix: str = "",  # noqa: N803
        ContinuationToken: str | None = None,  # noqa: N803
        MaxKeys: int = _LIST_PAGE,  # noqa: N803
        **_: Any,
    ) -> dict[str, Any]:
        keys = sorted(key for key in self._walk(Prefix) if ContinuationToken is None or key > ContinuationToken)
        page, more = keys[:MaxKeys], len(keys) > MaxKeys
        contents = []
        for key in page:
            try:
                stat = self.root.joinpath(*key.split("/")).stat()
            except FileNotFoundError:  # deleted since the walk
                continue
            contents.append({"Key": key, "Size": stat.st_size, "ETag": _etag(stat), "LastModified": _modified(stat)})
        response: dict[str, Any] = {"KeyCount": len(contents), "IsTruncated": more, "Prefix": Prefix}
        if contents:
            response["Contents"] = contents
        if more:
            response["NextContinuationToken"] = page[-1]
        return response

    def _walk(self, prefix: str) -> Iterator[str]:
        """The keys under ``prefix``: the files below the prefix's folder whose key starts with it."""
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        base, rest = (f"{folder}/" if folder else ""), prefix[len(folder) + 1 if folder else 0 :]
        for directory, subdirectories, files in start.walk():
            relative = directory.relative_to(start).as_posix()
            inner = "" if relative == "." else relative + "/"
            # Hidden folders (the metadata's) are no keys; at the top, only the folders the prefix can be in.
            top = not inner
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and (not top or d.startswith(rest))]
            for name in files:
                if not name.startswith("."):
                    key = base + inner + name
                    if key.startswith(prefix):
                        yield key

    def get_paginator(self, operation: str) -> _Paginator:
        if operation != "list_objects_v2":
            raise ValueError(f"the folder store lists objects only (list_objects_v2), not {operation}")
        return _Paginator(self)


def _modified(stat: os.stat_result) -> datetime:
    return datetime.fromtimestamp(stat.st_mtime, tz=UTC)
