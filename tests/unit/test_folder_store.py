"""The lake folder as an S3 client (apilake.folder_store): what the lake writer, the ledger and the marks rely on."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from apilake import folder_store
from apilake.folder_store import META_FOLDER, FolderClient, LakeFolderBusyError, release_folder
from apilake.lake import LakeWriter, create_if_absent, is_not_found
from apilake_cli.lakefolder import mirror

BUCKET = "local"
ROOT = Path(__file__).resolve().parents[2]


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_a_conditional_create_wins_once_and_keeps_the_first_body(tmp_path: Path) -> None:
    store = FolderClient(tmp_path)
    assert create_if_absent(store, BUCKET, "ledger/x/next=00002.json", b"first")
    assert not create_if_absent(store, BUCKET, "ledger/x/next=00002.json", b"second")
    assert store.get_object(Bucket=BUCKET, Key="ledger/x/next=00002.json")["Body"].read() == b"first"


def test_an_unchanged_page_is_not_rewritten_and_a_changed_one_is(tmp_path: Path) -> None:
    # Given a page landed with its hash in the metadata
    writer, key = (
        LakeWriter(FolderClient(tmp_path), BUCKET),
        "raw/source=s/ingestion_date=2026-11-26/shard=all/page=00001.json.gz",
    )
    first = writer.write_page(key, [{"id": 1}], {"run-id": "r1"})
    landed = _identity(tmp_path / key)
    # When the same records land again, then others
    again = writer.write_page(key, [{"id": 1}], {"run-id": "r2"})
    assert _identity(tmp_path / key) == landed
    changed = writer.write_page(key, [{"id": 2}], {"run-id": "r3"})
    # Then the first write created it, the second left it alone (its file untouched), the third replaced it
    assert (first.written, again.written, changed.written) == (True, False, True)
    head = FolderClient(tmp_path).head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["sha256"] == changed.sha256 and head["Metadata"]["run-id"] == "r3"


def test_if_match_writes_only_over_the_version_read(tmp_path: Path) -> None:
    store = FolderClient(tmp_path)
    etag = store.put_object(Bucket=BUCKET, Key="ledger/mark.json", Body=b"1")["ETag"]
    store.put_object(Bucket=BUCKET, Key="ledger/mark.json", Body=b"2", IfMatch=etag)
    with pytest.raises(ClientError) as stale:
        store.put_object(Bucket=BUCKET, Key="ledger/mark.json", Body=b"3", IfMatch=etag)
    assert stale.value.response["Error"]["Code"] == "PreconditionFailed"
    assert store.get_object(Bucket=BUCKET, Key="ledger/mark.json")["Body"].read() == b"2"


@pytest.mark.parametrize(
    ("call", "code"),
    [("get_object", "NoSuchKey"), ("head_object", "404")],
)
def test_a_missing_key_is_not_found_as_s3_says_it(tmp_path: Path, call: str, code: str) -> None:
    with pytest.raises(ClientError) as missing:
        getattr(FolderClient(tmp_path), call)(Bucket=BUCKET, Key="raw/none.json.gz")
    assert missing.value.response["Error"]["Code"] == code and is_not_found(missing.value)


def test_listing_pages_through_the_prefix_in_key_order_and_never_shows_metadata_or_temporary_files(
    tmp_path: Path,
) -> None:
    # Given five keys under a prefix, one beside it, metadata, and a temporary file left by a crash
    store = FolderClient(tmp_path)
    keys = [f"ledger/source=s/run=r/shard=all/landed={n:05d}.json" for n in (3, 1, 5, 2, 4)]
    for key in keys:
        store.put_object(Bucket=BUCKET, Key=key, Body=b"{}", Metadata={"a": "b"})
    store.put_object(Bucket=BUCKET, Key="ledger/source=s/run=r/shard=all/next=00002.json", Body=b"{}")
    (tmp_path / "ledger/source=s/run=r/shard=all/.landed=00009.json.tmp-x").write_bytes(b"{}")
    # When it is listed two keys a page
    pages = []
    token = None
    while True:
        extra: dict[str, str] = {"ContinuationToken": token} if token else {}
        page = store.list_objects_v2(
            Bucket=BUCKET, Prefix="ledger/source=s/run=r/shard=all/landed=", MaxKeys=2, **extra
        )
        pages.append([obj["Key"] for obj in page.get("Contents", [])])
        token = page.get("NextContinuationToken")
        if not token:
            break
    # Then every key comes once, in order, and the paginator agrees
    assert [key for page in pages for key in page] == sorted(keys) and len(pages) == 3
    listed = store.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="ledger/")
    assert [obj["Key"] for page in listed for obj in page["Contents"]] == sorted(
        [*keys, "ledger/source=s/run=r/shard=all/next=00002.json"]
    )
    assert (tmp_path / META_FOLDER).is_dir()


def test_deleting_removes_the_object_and_its_metadata(tmp_path: Path) -> None:
    store = FolderClient(tmp_path)
    store.put_object(Bucket=BUCKET, Key="raw/a/page=00001.json.gz", Body=b"x", Metadata={"sha256": "1"})
    store.delete_object(Bucket=BUCKET, Key="raw/a/page=00001.json.gz")
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == [".lock"]  # the writer's lock only


@pytest.mark.parametrize(
    "key", ["../escape.json", "raw/../../escape", "/abs", "raw//double", ".meta/x.json", "raw/.hidden"]
)
def test_a_key_that_is_not_a_plain_path_under_the_folder_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ClientError) as refused:
        FolderClient(tmp_path / "lake").put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert refused.value.response["Error"]["Code"] == "InvalidKey"
    assert not (tmp_path / "escape.json").exists() and [p.name for p in tmp_path.iterdir()] == ["lake"]


def _hold(folder: Path) -> subprocess.Popen[str]:
    """Another process writing ``folder`` (it holds the writer lock until its stdin closes)."""
    code = (
        "import sys; from pathlib import Path; from apilake.folder_store import writer_lock; "
        f"writer_lock(Path({str(folder)!r})); print('held', flush=True); sys.stdin.read()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers/common")}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_second_process_writing_a_lake_folder_fails_fast_and_writes_once_the_first_ends(tmp_path: Path) -> None:
    # Given another process writing the lake folder
    holder = _hold(tmp_path)
    try:
        # When this process writes a page, deletes a key, or mirrors a bucket into it
        store = FolderClient(tmp_path)
        # Then each fails at once, naming the folder and the holder, and nothing is written
        with pytest.raises(LakeFolderBusyError, match=rf"lake folder {tmp_path}: another process writes it \(pid "):
            store.put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x")
        with pytest.raises(LakeFolderBusyError, match=f"pid {holder.pid}"):
            store.delete_object(Bucket=BUCKET, Key="raw/a.json")
        with pytest.raises(LakeFolderBusyError):
            mirror(_Bucket({"raw/b.json": b"y"}), BUCKET, tmp_path)
        assert not (tmp_path / "raw").exists()
    finally:
        holder.communicate("")
    # When the other process has ended, then this one writes
    store.put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x")
    assert (tmp_path / "raw/a.json").read_bytes() == b"x"
    release_folder(tmp_path)


def test_a_mirrored_key_loses_the_metadata_an_ingest_wrote_for_other_bytes(tmp_path: Path) -> None:
    # Given a page written with its hash by `apilake ingest` (FolderClient), then this process lets go of the folder
    FolderClient(tmp_path).put_object(Bucket=BUCKET, Key="raw/p.json", Body=b"old", Metadata={"sha256": "old"})
    release_folder(tmp_path)
    # When the local flow mirrors other bytes to that key
    assert mirror(_Bucket({"raw/p.json": b"new"}), BUCKET, tmp_path, ("raw/",)) == 1
    # Then no metadata vouches for the new bytes, and the folder is free again
    answer = FolderClient(tmp_path).get_object(Bucket=BUCKET, Key="raw/p.json")
    assert answer["Body"].read() == b"new" and answer["Metadata"] == {}
    release_folder(tmp_path)


def test_a_file_is_on_disk_before_it_takes_its_keys_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the calls that sync a file and give it its name, recorded in order
    events: list[str] = []
    real_fsync, real_replace, real_link = os.fsync, Path.replace, Path.hardlink_to

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(self: Path, target: Path) -> Path:
        events.append("name")
        return real_replace(self, target)

    def link(self: Path, target: Path) -> None:
        events.append("name")
        real_link(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    monkeypatch.setattr(Path, "hardlink_to", link)
    store = FolderClient(tmp_path)
    # When a page is written, then created if absent
    store.put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x")
    store.put_object(Bucket=BUCKET, Key="ledger/b.json", Body=b"y", IfNoneMatch="*")
    # Then each file was synced before it was named
    assert events == ["fsync", "name", "fsync", "name"]
    release_folder(tmp_path)


def test_metadata_is_named_without_a_sync_and_one_cut_short_reads_as_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the syncs of a store, counted
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = FolderClient(tmp_path)
    # When a page with metadata is written
    store.put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x", Metadata={"sha256": "1"})
    # Then only the page was synced (its metadata is a cache of what it says, not the lake's record)
    assert len(synced) == 1
    # When a power loss left its metadata file empty, or cut short
    for cut in (b"", b'{"sha2'):
        (tmp_path / ".meta/raw/a.json.json").write_bytes(cut)
        # Then the page reads as one without metadata (the lake writer rewrites it rather than trust it)
        assert store.head_object(Bucket=BUCKET, Key="raw/a.json")["Metadata"] == {}
    release_folder(tmp_path)


@pytest.mark.parametrize(
    "condition", [{}, {"IfNoneMatch": "*"}, {"IfMatch": "current"}], ids=["plain", "IfNoneMatch", "IfMatch"]
)
def test_a_write_answers_the_etag_of_the_object_it_wrote(tmp_path: Path, condition: dict[str, str]) -> None:
    store, key = FolderClient(tmp_path), "ledger/mark.json"
    if condition.get("IfMatch"):
        condition = {"IfMatch": store.put_object(Bucket=BUCKET, Key=key, Body=b"old")["ETag"]}
    written = store.put_object(Bucket=BUCKET, Key=key, Body=b"new", Metadata={"a": "b"}, **condition)["ETag"]
    assert written == store.head_object(Bucket=BUCKET, Key=key)["ETag"]
    release_folder(tmp_path)


def _temporary_files(root: Path) -> list[str]:
    return [path.name for path in root.rglob(".*.tmp-*")]


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a disk that is full when a file is synced
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    # When a page is written, then the write fails, and neither the page nor a part of it is left
    with pytest.raises(OSError, match="No space left"):
        FolderClient(tmp_path).put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x")
    assert not (tmp_path / "raw/a.json").exists() and _temporary_files(tmp_path) == []
    release_folder(tmp_path)


@pytest.mark.parametrize(
    ("taken", "metadata"),
    [("raw/a.json/x", None), (".meta/raw/a.json.json/x", {"sha256": "1"})],
    ids=["the key's name", "its metadata's name"],
)
def test_a_name_taken_by_a_folder_fails_the_write_and_leaves_no_temporary_file(
    tmp_path: Path, taken: str, metadata: dict[str, str] | None
) -> None:
    (tmp_path / taken).parent.mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        FolderClient(tmp_path).put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x", Metadata=metadata)
    assert _temporary_files(tmp_path) == []
    release_folder(tmp_path)


def test_a_temporary_name_left_by_a_crashed_process_with_this_pid_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the temporary file a crashed process with this pid left under the name this write would take next
    monkeypatch.setattr(folder_store, "_TEMPORARY", itertools.count(7))
    left = tmp_path / f"raw/.a.json.tmp-{os.getpid()}-7"
    left.parent.mkdir()
    left.write_bytes(b"left")
    # When the key is written, then it is, and the left file is untouched
    FolderClient(tmp_path).put_object(Bucket=BUCKET, Key="raw/a.json", Body=b"x")
    assert ((tmp_path / "raw/a.json").read_bytes(), left.read_bytes()) == (b"x", b"left")
    release_folder(tmp_path)


class _Bucket:
    """A bucket's list and get, from a dict (what lakefolder.mirror reads)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_paginator(self, operation: str) -> _Bucket:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # noqa: N803 - boto3's names
        now = datetime.now(UTC)
        return [{"Contents": [{"Key": k, "LastModified": now} for k in self.objects if k.startswith(Prefix)]}]

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"Body": io.BytesIO(self.objects[Key])}
