"""Several processes writing one lake folder as one writer (apilake.folder_store): the process holding the folder's
lock passes its descriptor to the processes it starts, which adopt it; any other process is refused while one of the
group lives; and a conditional write (IfMatch) is one across the group's processes.

The processes are real: a child is ``python -c`` with the descriptor passed (``pass_fds``), as `apilake ingest
--processes` starts its workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from apilake.exceptions import ApilakeError
from apilake.folder_store import (
    LOCK_FILE,
    FolderClient,
    LakeFolderBusyError,
    adopt_lock,
    lock_fd,
    release_folder,
    writer_lock,
)

BUCKET = "local"
COUNTER = "ledger/counter.json"
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers/common"), str(ROOT)])}

# A process of the group: adopts the descriptor, writes a key, says so, and lives until its stdin closes.
MEMBER = """
import sys
from pathlib import Path
from apilake.folder_store import FolderClient, adopt_lock
root = Path(sys.argv[1])
adopt_lock(root, int(sys.argv[2]))
FolderClient(root).put_object(Bucket="local", Key=sys.argv[3], Body=b"member")
print("written", flush=True)
sys.stdin.read()
"""
# A process outside the group: tries to write a key once.
OUTSIDER = """
import sys
from pathlib import Path
from apilake.folder_store import FolderClient, LakeFolderBusyError
try:
    FolderClient(Path(sys.argv[1])).put_object(Bucket="local", Key="raw/outsider.json", Body=b"outsider")
except LakeFolderBusyError:
    print("refused")
else:
    print("written")
"""
# A racer of the group: increments the counter by IfMatch, prints the ETags it won over.
RACER = """
import json, sys
from pathlib import Path
from apilake.folder_store import adopt_lock
from tests.unit.test_folder_group import race
root = Path(sys.argv[1])
adopt_lock(root, int(sys.argv[2]))
sys.stdin.readline()  # the start, given to both racers at once
print(json.dumps(race(root, int(sys.argv[3]))))
"""


def member(root: Path, fd: int, key: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", MEMBER, str(root), str(fd), key],
        pass_fds=[fd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None and process.stdout.readline() == "written\n"
    return process


def outsider(root: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", OUTSIDER, str(root)], capture_output=True, text=True, env=ENV, check=True
    ).stdout.strip()


def race(root: Path, rounds: int) -> list[str]:
    """``rounds`` increments of the counter, each by IfMatch over the version read (read again after a 412); the
    ETags this process's writes were conditional on."""
    store, won = FolderClient(root), list[str]()
    while len(won) < rounds:
        current = store.get_object(Bucket=BUCKET, Key=COUNTER)
        value = int(current["Body"].read())
        try:
            store.put_object(Bucket=BUCKET, Key=COUNTER, Body=b"%09d" % (value + 1), IfMatch=current["ETag"])
        except ClientError as error:
            if error.response["Error"]["Code"] != "PreconditionFailed":
                raise
            continue
        won.append(current["ETag"])
    return won


def test_a_process_of_the_group_writes_and_any_other_is_refused_until_the_whole_group_has_ended(
    tmp_path: Path,
) -> None:
    # Given this process holding the folder's lock, and a child started with its descriptor
    child = member(tmp_path, lock_fd(tmp_path), "raw/child.json")
    try:
        # Then the child wrote, and a process outside the group is refused
        assert (tmp_path / "raw/child.json").read_bytes() == b"member"
        assert outsider(tmp_path) == "refused"
        # When this process lets go of the folder (or is killed) while the child still runs
        release_folder(tmp_path)
        # Then the child still keeps an outsider out
        assert outsider(tmp_path) == "refused"
    finally:
        child.communicate("")
    # And once the child has ended too, the outsider writes
    assert outsider(tmp_path) == "written"


@pytest.mark.parametrize(
    ("descriptor", "error", "reason"),
    [
        (lambda root: os.open(os.devnull, os.O_RDONLY), ApilakeError, "is not of its lock file"),
        (lambda root: os.open(root / LOCK_FILE, os.O_RDONLY), LakeFolderBusyError, "another process writes it"),
        (lambda root: 999, ApilakeError, "descriptor 999 cannot be adopted as its writer lock: Bad file descriptor"),
    ],
    ids=["another file", "the lock file opened anew", "not open"],
)
def test_a_descriptor_that_is_not_the_groups_lock_is_not_adopted(
    tmp_path: Path, descriptor: Callable[[Path], int], error: type[Exception], reason: str
) -> None:
    # Given a writer of the folder outside this process
    holder = member(tmp_path, lock_fd(tmp_path), "raw/holder.json")
    release_folder(tmp_path)
    fd = descriptor(tmp_path)
    try:
        # When this process adopts a descriptor that is not of the holder's lock, then it is refused
        with pytest.raises(error, match=reason):
            adopt_lock(tmp_path, fd)
        # And it cannot write
        with pytest.raises(LakeFolderBusyError):
            FolderClient(tmp_path).put_object(Bucket=BUCKET, Key="raw/x.json", Body=b"x")
    finally:
        holder.communicate("")
        if fd != 999:
            os.close(fd)


def test_a_process_holding_its_own_lock_adopts_no_other(tmp_path: Path) -> None:
    mine = writer_lock(tmp_path).fd
    other = os.dup(mine)
    try:
        with pytest.raises(ApilakeError, match=f"this process holds its lock already \\(descriptor {mine}\\)"):
            adopt_lock(tmp_path, other)
        adopt_lock(tmp_path, mine)  # its own: nothing to do
    finally:
        os.close(other)
        release_folder(tmp_path)


def spawned(root: Path, rounds: int) -> list[list[str]]:
    """Two racers started as `apilake ingest --processes` starts its workers: the lock's descriptor passed, adopted."""
    fd = lock_fd(root)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(root), str(fd), str(rounds)],
            pass_fds=[fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    return [json.loads(racer.communicate()[0]) for racer in racers]


def forked(root: Path, rounds: int) -> list[list[str]]:
    """Two racers forked from this process (no exec): they inherit its descriptors, the CAS lock file's among them."""
    start_read, start_write = os.pipe()
    racers = []
    for _ in range(2):
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the racer: never back into pytest
            code = 1
            try:
                os.read(start_read, 1)
                with os.fdopen(result_write, "w") as out:
                    out.write(json.dumps(race(root, rounds)))
                code = 0
            finally:
                os._exit(code)
        os.close(result_write)
        racers.append((pid, result_read))
    os.write(start_write, b"go")
    won = []
    for pid, result_read in racers:
        with os.fdopen(result_read) as result:
            won.append(json.loads(result.read()))
        assert os.waitpid(pid, 0)[1] == 0
    os.close(start_read)
    os.close(start_write)
    return won


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(spawned, id="started with the descriptor"),
        # (the racers take no lock that another thread of pytest's process may hold at the fork)
        pytest.param(forked, id="forked", marks=pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")),
    ],
)
def test_a_conditional_write_is_won_once_across_the_processes_of_the_group(
    tmp_path: Path, start: Callable[[Path, int], list[list[str]]]
) -> None:
    # Given a counter, written conditionally once by this process (its CAS lock file open)
    store = FolderClient(tmp_path)
    etag = store.put_object(Bucket=BUCKET, Key=COUNTER, Body=b"%09d" % 1)["ETag"]
    store.put_object(Bucket=BUCKET, Key=COUNTER, Body=b"%09d" % 0, IfMatch=etag)
    # When two processes of the group increment it by IfMatch 300 times each, at once
    rounds = 300
    won = start(tmp_path, rounds)
    # Then no version was written over twice, and no increment was lost
    assert len(set(won[0]) | set(won[1])) == 2 * rounds
    assert int(store.get_object(Bucket=BUCKET, Key=COUNTER)["Body"].read()) == 2 * rounds
    release_folder(tmp_path)
