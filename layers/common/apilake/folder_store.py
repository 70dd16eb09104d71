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
- One writer a folder at a time: a process's first write takes an exclusive ``fcntl.flock`` on ``<folder>/.lock``,
  held until the process ends (or :func:`release_folder`); a second process writing the folder fails at once with
  :class:`LakeFolderBusyError` (naming the holder's pid). Within the process, the folder's clients share the lock.
  The writer can be a group of processes: the process holding the lock passes its descriptor (:func:`lock_fd`) to
  the processes it starts, which adopt it (:func:`adopt_lock`); the lock is the open file description's, held while
  any process of the group keeps a descriptor of it (a child whose parent was killed keeps a new writer out until it
  ends too: a new writer that finds the lock file naming a process of this host that has ended waits up to
  :data:`ORPHANS_SECONDS` for it, the children taking no page once their parent is gone).
- ``IfMatch`` is checked and the object replaced under a lock of the process's threads and a ``flock`` of
  ``<folder>/.lock-cas`` (each process's own descriptor): a conditional write is one across the writer group's
  processes, and across processes at all. The writer's threads and processes write different keys otherwise (the
  runner gives each page to one of them); an object and its metadata are never interleaved with another writer's.
- An object's bytes are on disk (``fsync``) before it takes its key's name: after a power loss, a ledger marker never
  vouches for a page file that is empty. Metadata files are not fsynced: one cut short reads as none. A file is
  written with the descriptor calls only (``os.open``, ``os.write``, ``os.fsync``), its ``ETag`` read from that
  descriptor; temporary names are the process's id and a counter.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from botocore.exceptions import ClientError

from apilake.exceptions import ApilakeError

LOCK_FILE = ".lock"  # the writer's lock, at the folder's root (hidden: no key)
# How long a writer waits for the lock of a writer that ended while processes it started (its parts) still hold it:
# they take no page once it ended, and end after their pages in flight.
ORPHANS_SECONDS = 60.0
CAS_LOCK_FILE = ".lock-cas"  # held around an IfMatch's check and replace, by one process at a time
META_FOLDER = ".meta"  # the objects' metadata, at the folder's root: .meta/<key>.json
_LIST_PAGE = 1000  # keys per listing page, as S3's
_TEMPORARY = itertools.count()  # the number in this process's temporary names (next() is atomic under the GIL)
_PROCESS = {"pid": os.getpid()}  # this process's id, read once (a forked child's is its own)
os.register_at_fork(after_in_child=lambda: _PROCESS.update(pid=os.getpid()))


def _error(code: str, operation: str, key: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": key}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


class LakeFolderBusyError(ApilakeError):
    """Another process writes the lake folder."""


class _WriterLock:
    """This process's descriptor of the exclusive lock on a lake folder (taken here, or adopted from the process of
    its writer group that took it), and the locks an ``IfMatch`` is checked under."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self.fd = fd
        self.guard = threading.Lock()  # one thread of this process in a compare-and-swap at a time
        self._cas: tuple[int, int] | None = None  # (pid, descriptor) of the CAS lock file, opened by this process

    @classmethod
    def take(cls, root: Path) -> _WriterLock:
        path = root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not _flock_within(fd, ORPHANS_SECONDS if _holder_gone(fd) else 0.0):
            error = _busy(root, fd)
            os.close(fd)
            raise error from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(root, fd)

    @classmethod
    def adopt(cls, root: Path, fd: int) -> _WriterLock:
        try:
            inherited, lock = os.fstat(fd), (root / LOCK_FILE).stat()
        except OSError as exc:
            raise ApilakeError(
                f"lake folder {root}: descriptor {fd} cannot be adopted as its writer lock: {exc.strerror}"
            ) from None
        if (inherited.st_dev, inherited.st_ino) != (lock.st_dev, lock.st_ino):
            raise ApilakeError(f"lake folder {root}: descriptor {fd} is not of its lock file {root / LOCK_FILE}")
        try:  # granted at once when the descriptor shares the open file description that holds the lock
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(root, fd) from None
        return cls(root, fd)

    @contextlib.contextmanager
    def compare_and_swap(self) -> Iterator[None]:
        """One thread of the writer group's processes at a time: this process's threads by ``guard``, the processes
        by a ``flock`` of the CAS lock file on a descriptor of each process's own (a descriptor inherited through a
        fork shares its lock with the parent: the child opens its own)."""
        with self.guard:
            if self._cas is None or self._cas[0] != _PROCESS["pid"]:
                self._cas = (
                    _PROCESS["pid"],
                    os.open(self.root / CAS_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644),
                )
            fd = self._cas[1]
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def release(self) -> None:
        os.close(self.fd)  # closing the last descriptor of the open file description releases the flock
        if self._cas is not None and self._cas[0] == _PROCESS["pid"]:
            os.close(self._cas[1])


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"


def _holder_gone(fd: int) -> bool:
    """True when the lock file names a process of this host that has ended: the lock is then held by the processes
    it started (an `apilake ingest` killed while its parts run), which end after their pages in flight."""
    holder = _holder(fd)
    if not holder.isdigit():
        return False
    try:
        os.kill(int(holder), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _flock_within(fd: int, seconds: float) -> bool:
    """The exclusive lock on ``fd``, waited for up to ``seconds``; False when another process still holds it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def _busy(root: Path, fd: int) -> LakeFolderBusyError:
    holder = _holder(fd)
    gone = (
        f" (pid {holder} has ended; processes it started still hold the lock after {ORPHANS_SECONDS:g} s)"
        if _holder_gone(fd)
        else ""
    )
    return LakeFolderBusyError(
        f"lake folder {root}: another process writes it (pid {holder}, lock {root / LOCK_FILE}){gone}: one writer a "
        "lake folder at a time; wait for it to end"
    )


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
            lock = _WRITERS[root] = _WriterLock.take(root)
        return lock


def lock_fd(root: Path) -> int:
    """This process's descriptor of the lock on the lake folder ``root`` (taken now if not yet), for the processes
    it starts to write ``root`` as one writer with it: ``subprocess.Popen(..., pass_fds=[fd])``, then
    :func:`adopt_lock` in each. Open until :func:`release_folder` (a child keeps its copy: the lock stays held)."""
    return writer_lock(root).fd


def adopt_lock(root: Path, fd: int) -> None:
    """In a process started by the writer of the lake folder ``root``, the inherited descriptor ``fd`` of its lock
    (:func:`lock_fd`) as this process's writer lock: this process writes ``root`` as one writer with its group.

    The lock belongs to the open file description the descriptors share: it is held while any process of the group
    keeps one open, so a process whose parent was killed keeps a new writer out until it ends too (and the pid in
    the lock file is the parent's). Raises :class:`ApilakeError` when ``fd`` is not open or not of ``root``'s lock
    file (or this process holds another lock of ``root``), :class:`LakeFolderBusyError` when it is of the lock file
    but another process holds the lock (a descriptor opened anew, not inherited)."""
    root = root.resolve()
    with _WRITERS_GUARD:
        held = _WRITERS.get(root)
        if held is None:
            _WRITERS[root] = _WriterLock.adopt(root, fd)
        elif held.fd != fd:
            raise ApilakeError(f"lake folder {root}: this process holds its lock already (descriptor {held.fd})")


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


def write_durably(path: Path, data: bytes | bytearray | memoryview, sync: bool = True) -> os.stat_result:
    """``data`` in a new file ``path``, on disk (fsync, unless not ``sync``) when this returns; its status, read from
    its descriptor.
    Descriptor calls only: a buffered file would ask the kernel whether it is a terminal, its size and its position
    too (each call lets go of the GIL, a hand-off between threads). Nothing is left at ``path`` when it fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
        status = os.fstat(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return status


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """A file's bytes and its status, by descriptor calls (a file is replaced, never written in place)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        if S_ISDIR(status.st_mode):
            raise IsADirectoryError(path)
        chunks, left = [], status.st_size
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), status
    finally:
        os.close(fd)


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

    def _writer(self) -> _WriterLock:
        """This process's lock on the folder (taken now if not yet), found without resolving the root's path again
        (a stat of each of its folders)."""
        return _WRITERS.get(self.root) or writer_lock(self.root)

    def _temporary(
        self, path: Path, data: bytes | bytearray | memoryview, sync: bool = True
    ) -> tuple[Path, os.stat_result]:
        """``data`` in a new file beside ``path`` (hidden: its name starts with a dot), and its status."""
        folder = self._folder(path)
        while True:
            temporary = folder / f".{path.name}.tmp-{_PROCESS['pid']}-{next(_TEMPORARY)}"
            try:
                return temporary, write_durably(temporary, data, sync)
            except FileExistsError:  # left by a process that crashed with this pid: the next name
                continue

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
        writer = self._writer()
        temporary, written = self._temporary(path, _body_bytes(Body))
        try:
            if IfNoneMatch == "*":
                try:
                    path.hardlink_to(temporary)
                except FileExistsError:
                    raise _error("PreconditionFailed", "PutObject", Key, 412) from None
                temporary.unlink()
            elif IfMatch is not None:
                with writer.compare_and_swap():
                    try:
                        current = _etag(path.stat())
                    except FileNotFoundError:
                        raise _error("NoSuchKey", "PutObject", Key, 404) from None
                    if current != IfMatch:
                        raise _error("PreconditionFailed", "PutObject", Key, 412)
                    temporary.replace(path)
            else:
                temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._write_meta(Key, Metadata)
        return {"ETag": _etag(written)}  # the file's: a link or a rename keeps its inode, mtime and size

    def _write_meta(self, key: str, metadata: dict[str, str] | None) -> None:
        meta = self._meta_path(key)
        if not metadata:
            meta.unlink(missing_ok=True)
            return
        # Not fsynced: after a power loss a metadata file may be empty, which reads as no metadata (the lake writer
        # then rewrites the page rather than trust it); the object and the ledger's markers are on disk.
        temporary, _ = self._temporary(meta, json.dumps(metadata, separators=(",", ":")).encode(), sync=False)
        try:
            temporary.replace(meta)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def delete_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        self._writer()
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
            data, stat = _read(path)
        except (FileNotFoundError, IsADirectoryError):
            raise _error("NoSuchKey", "GetObject", Key, 404) from None
        return {**self._attributes(Key, stat), "Body": io.BytesIO(data)}

    def _attributes(self, key: str, stat: os.stat_result) -> dict[str, Any]:
        try:
            metadata = json.loads(_read(self._meta_path(key))[0])
        except (FileNotFoundError, ValueError):  # none, or cut short by a power loss (it is not fsynced)
            metadata = {}
        if not isinstance(metadata, dict):
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
