"""A part of an `apilake ingest` run, in a process of its own (apilake.runner_parts): started by the run's
process with ``python -m apilake_cli.ingest_part``, it reads its :class:`~apilake.runner_parts.PartSpec` on stdin,
works its items as the run's process works its own, and writes its progress and result as JSON lines on stdout.
Not a command for people: `apilake ingest --processes N` starts it."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

from apilake.runner_parts import PROGRESS_SECONDS, PartProgress, PartSpec, watch_stdin, write_line


def _client(spec: PartSpec, threads: int) -> Any:
    from apilake_cli.ingest import bucket_client

    if spec.lake is None:
        return bucket_client(spec.endpoint_url, threads)
    from apilake.folder_store import FolderClient, adopt_lock

    if spec.lock_fd is None:
        raise ValueError("a part writing a lake folder needs the folder's lock (lock_fd)")
    adopt_lock(Path(spec.lake), spec.lock_fd)
    return FolderClient(Path(spec.lake))


def run_part(spec: PartSpec, stdin: IO[str], stdout: IO[str]) -> int:
    from apilake.auth import CredentialStore
    from apilake.config import sources_from_bytes
    from apilake.http import new_session
    from apilake.runner import Runner
    from apilake_cli.ingest import LocalSecrets, log_stream, logs_to, workers_of

    sources = sources_from_bytes(spec.sources_file, spec.sources_text.encode("utf-8"))
    threads = workers_of(sources, sorted({item.source for item in spec.items}), spec.workers_per_source)
    runner = Runner(
        sources,
        _client(spec, threads),
        spec.bucket,  # the run's: a lake folder's is ingest's FOLDER_BUCKET
        new_session(pool_size=threads + 2),
        CredentialStore(LocalSecrets(spec.secrets, spec.endpoint_url)),
        workers_per_source=spec.workers_per_source,
        retry_delay_seconds=spec.retry_delay_seconds,
        echo=lambda _line: None,
        max_seconds=spec.max_seconds,
    )
    lock = threading.Lock()
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_SECONDS):
            if not write_line(stdout, PartProgress(progress=runner.counts()), lock):
                return

    watch_stdin(stdin, runner.queues.stop)
    reporter = threading.Thread(target=report, name="part-progress", daemon=True)
    reporter.start()
    with log_stream(spec.log_file) as stream, logs_to(stream, spec.log_level):
        result = runner.work(spec.items)
    done.set()
    reporter.join()
    if not write_line(stdout, result, lock):
        # The run's process is gone: the ledger says what this part landed (a resume goes on from it).
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
    return 0


def main() -> int:
    # What every part needs, imported while the run's process takes its lease and plans (it starts parts ahead).
    import apilake.auth
    import apilake.folder_store
    import apilake.runner  # noqa: F401

    # The protocol has stdout's descriptor to itself: whatever else would print there (a library's print, a log
    # handler made before the part's log stream is set) goes to stderr instead.
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    line = sys.stdin.readline()
    if not line:  # started ahead and given no part
        return 0
    return run_part(PartSpec.model_validate_json(line), sys.stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
