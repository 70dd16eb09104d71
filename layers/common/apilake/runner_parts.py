"""Several processes for one run of `apilake ingest` (apilake.runner): Python runs one thread at a time, so a run
whose pages cost CPU (parsing, encoding, gzip) uses one CPU however many threads it has. With ``processes`` above
1, the run's sources are split into parts, each part's work items go to a process of its own, and the run's
process works the first part itself.

- A part is a set of whole *families*: sources linked by a parent (a child's pages are announced by its parent's
  pages, in the process that lands them) or by a budget group (whose quota one pacer spends, exactly). Families
  are given to parts largest first (by work items), each to the part with the fewest so far.
- The run's process holds the run's lease and the lake folder's lock (its descriptor is inherited by the
  parts, so the folder has one writer group), plans or resumes, and judges the run at its end, as with one
  process. A part does its items as the run's process does its own: the same queues, threads and ingester.
- A part's process reads one :class:`PartSpec` (JSON, one line) on its stdin and writes JSON lines on its
  stdout: :class:`PartProgress` every half second, then one :class:`PartResult`. A line ``stop`` on its stdin,
  or its stdin closed (the run's process gone, even killed), makes it take no page any more: the pages in
  flight finish, and the ledger says what is missing (a resume continues, as after any stop).
- A part's counts (pages, records, bytes, retries, 429s) come back in its result and are added to this
  process's :data:`~apilake.observability.totals`, so the run's summary and metrics count every part.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from apilake.config import SourcesFile
from apilake.messages import WorkItem
from apilake.observability import Metric, logger, totals

PROGRESS_SECONDS = 0.5
STOP_LINE = "stop"


class PartSpec(BaseModel):
    """What a part's process needs, on its stdin: where the sources and the lake are, how to work, its items."""

    model_config = ConfigDict(extra="forbid")

    part: int
    sources_file: str  # where it came from, for its errors
    sources_text: str  # the file as the run's process read it (the part validates these, not the file again)
    lake: str | None = None  # a lake folder, or a bucket:
    bucket: str
    endpoint_url: str | None = None
    lock_fd: int | None = None  # the lake folder's lock, inherited from the run's process
    secrets: dict[str, str] = Field(default_factory=dict)
    workers_per_source: int | None = None
    retry_delay_seconds: float = 5.0
    max_seconds: float | None = None
    log_file: str = "-"  # "-": stderr
    log_level: str = "WARNING"
    items: list[WorkItem]


class SourceCounts(BaseModel):
    landed: int = 0
    queued: int = 0
    delayed: int = 0


class PartProgress(BaseModel):
    progress: dict[str, SourceCounts]


class PartResult(BaseModel):
    """A part's end: each source's metric counts (by metric name), its dead items, why it stopped short, if so."""

    counts: dict[str, dict[str, float]]
    queued: int
    dead_items: list[WorkItem] = Field(default_factory=list)
    drained: bool
    error: str | None = None
    timed_out: bool = False


def families(sources: SourcesFile, names: Sequence[str]) -> list[list[str]]:
    """``names`` in groups that one process must run together: a source with its parent and children, and the
    sources of one budget group (each group in the file's order, the groups by their first source)."""
    known = {source.name for source in sources.sources}
    root = {name: name for name in names if name in known}

    def find(name: str) -> str:
        while root[name] != name:
            root[name] = root[root[name]]
            name = root[name]
        return name

    def join(a: str, b: str) -> None:
        if a in root and b in root:
            root[find(a)] = find(b)

    first_of_group: dict[str, str] = {}
    for source in sources.sources:
        if source.name not in root:
            continue
        if source.parent is not None:
            join(source.name, source.parent.source)
        group = source.budget.group
        if group is not None:
            join(source.name, first_of_group.setdefault(group, source.name))
    grouped: dict[str, list[str]] = {}
    for name in [source.name for source in sources.sources if source.name in root]:
        grouped.setdefault(find(name), []).append(name)
    return list(grouped.values())


def split(sources: SourcesFile, items: Sequence[WorkItem], processes: int) -> list[list[WorkItem]]:
    """``items`` in at most ``processes`` parts of whole families (see the module), the largest part first; one part
    when ``processes`` is 1 or the items are of one family."""
    names = [source.name for source in sources.sources]
    related = families(sources, names)
    family_of = {name: index for index, family in enumerate(related) for name in family}
    by_family: dict[int, list[WorkItem]] = {}
    for item in items:
        by_family.setdefault(family_of[item.source], []).append(item)
    count = max(1, min(processes, len(by_family)))
    parts: list[list[WorkItem]] = [[] for _ in range(count)]
    for family_items in sorted(by_family.values(), key=len, reverse=True):
        min(parts, key=len).extend(family_items)
    return sorted((part for part in parts if part), key=len, reverse=True)


class PartProcess:
    """The run's handle on one part's process: its progress, stop, and result."""

    def __init__(self, process: subprocess.Popen[str], spec: PartSpec, on_end: Callable[[PartProcess], None]) -> None:
        self.spec = spec
        self.sources = sorted({item.source for item in spec.items})
        self.progress: dict[str, SourceCounts] = {}
        self.result: PartResult | None = None
        self.failure: str | None = None
        self._on_end = on_end
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin: IO[str] = process.stdin
        self._stdin_lock = threading.Lock()
        self._send(spec.model_dump_json())
        self._reader = threading.Thread(
            target=self._read, args=(process.stdout,), name=f"part-{spec.part}", daemon=True
        )
        self._reader.start()

    @property
    def name(self) -> str:
        return f"process part {self.spec.part} ({', '.join(self.sources)})"

    def running(self) -> bool:
        return self._reader.is_alive()

    def stop(self) -> None:
        """No page taken any more (the pages in flight finish)."""
        self._send(STOP_LINE)

    def wait(self) -> None:
        self._reader.join()
        self._process.wait()

    def _send(self, line: str) -> None:
        with self._stdin_lock:
            try:
                self._stdin.write(line + "\n")
                self._stdin.flush()
            except (BrokenPipeError, ValueError):  # it has ended (or is ending): nothing to tell it
                pass

    def _read(self, stdout: IO[str]) -> None:
        try:
            for line in stdout:
                document = json.loads(line)
                if "progress" in document:
                    self.progress = PartProgress.model_validate(document).progress
                else:
                    self.result = PartResult.model_validate(document)
        except (ValueError, OSError) as exc:  # not our protocol: the part cannot be followed, so it is stopped
            self.failure = f"{type(exc).__name__}: {exc}"
            self._process.kill()
        finally:
            code = self._process.wait()
            with self._stdin_lock:
                self._stdin.close()
            if self.result is None:
                why = self.failure or f"exit code {code}"
                self.failure = f"{self.name} ended without its result ({why}): see the log"
                logger.error("ingest part failed", extra={"part": self.spec.part, "why": why})
            self._on_end(self)


def merge_counts(result: PartResult) -> None:
    """A part's counts added to this process's totals (where the run's summary and metrics read them)."""
    for source, counts in result.counts.items():
        for name, value in counts.items():
            totals.add(source, Metric(name), value)


def counts_of(names: Sequence[str], before: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    """Each of ``names``' metric counts in this process since ``before`` (a totals snapshot), the nonzero ones."""
    now = totals.snapshot()
    counts: dict[str, dict[str, float]] = {}
    for name in names:
        for metric in Metric:
            value = now.get((name, metric.value), 0.0) - before.get((name, metric.value), 0.0)
            if value:
                counts.setdefault(name, {})[metric.value] = value
    return counts


def write_line(stream: IO[str], model: BaseModel, lock: threading.Lock) -> bool:
    """``model`` as one line on ``stream``; False when nobody reads it any more (the run's process is gone)."""
    with lock:
        try:
            stream.write(model.model_dump_json() + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            return False
    return True


def watch_stdin(stdin: IO[str], stop: Callable[[], None]) -> threading.Thread:
    """A thread that calls ``stop`` at a ``stop`` line or when ``stdin`` closes (the run's process is gone)."""

    def watch() -> None:
        for line in stdin:
            if line.strip() == STOP_LINE:
                break
        stop()

    thread = threading.Thread(target=watch, name="part-stdin", daemon=True)
    thread.start()
    return thread


class PartLauncher:
    """Starts a run's parts: each a process of ``command`` (which reads a :class:`PartSpec` on its stdin), with
    ``template``'s settings and the descriptors ``pass_fds`` (the lake folder's lock). Processes can be started
    ahead (:meth:`prestart`), so that their start-up (imports) overlaps the run's lease and planning; one not given
    a part is closed (its stdin: it ends at once)."""

    def __init__(self, command: Sequence[str], template: dict[str, Any], pass_fds: Sequence[int] = ()) -> None:
        self.command = list(command)
        self.template = template
        self.pass_fds = list(pass_fds)
        self._ready: list[subprocess.Popen[str]] = []

    def prestart(self, count: int) -> None:
        self._ready.extend(self._spawn() for _ in range(count))

    def start(
        self, part: int, items: list[WorkItem], max_seconds: float | None, on_end: Callable[[PartProcess], None]
    ) -> PartProcess:
        spec = PartSpec.model_validate({**self.template, "part": part, "items": items, "max_seconds": max_seconds})
        return PartProcess(self._ready.pop(0) if self._ready else self._spawn(), spec, on_end)

    def close_unused(self) -> None:
        """End the processes started ahead that got no part."""
        while self._ready:
            process = self._ready.pop()
            if process.stdin is not None:
                process.stdin.close()
            if process.stdout is not None:
                process.stdout.close()
            process.wait()

    def _spawn(self) -> subprocess.Popen[str]:
        # A session of its own: a Ctrl-C (SIGINT to the terminal's process group) reaches the run's process only,
        # whose end closes the part's stdin: the part takes no page more and finishes those in flight.
        return subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=tuple(self.pass_fds),
            start_new_session=True,
        )
