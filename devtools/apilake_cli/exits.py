"""The exit codes of the operator commands, one meaning each (docs/operating.md lists them per command)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    DONE = 0  # the run is complete, the DLQ is empty, the messages moved, the query succeeded, the report is there
    NOT_DONE = 1  # the run is incomplete, messages are left in a DLQ (or in flight elsewhere), the task FAILED
    ERROR = 2  # bad input or an AWS error (the planner's or Athena's failure among them)
    TIMED_OUT = 3  # --follow, a message move task or a query still going when the timeout passed


def epilog(done: str, not_done: str | None = None, timed_out: str | None = None) -> str:
    """The exit codes of one command, for its ``--help``."""
    lines = [f"  0  {done}"]
    if not_done:
        lines.append(f"  1  {not_done}")
    lines.append("  2  bad input, or an AWS error (the message says which)")
    if timed_out:
        lines.append(f"  3  {timed_out}")
    return "exit codes:\n" + "\n".join(lines)
