"""The small error hierarchy of apilake.

What matters is the split between *retryable* errors (the message goes back to its queue and is
delivered again) and *permanent* ones (retrying cannot help: the message fails, is retried by SQS
up to maxReceiveCount and ends in the DLQ with the reason logged). And one way to say what a
pydantic model refused (sources file, planner event, environment): ``origin: location: message``.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError


class ApilakeError(Exception):
    """Base of every error apilake raises on purpose."""


class ConfigError(ApilakeError):
    """The sources file or the environment is invalid; the message names the file and the field."""


class RetryableError(ApilakeError):
    """A failure that may pass: the message returns to the queue."""


class TransientHttpError(RetryableError):
    """429, 5xx, a connection error or a timeout from the vendor."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class CircuitOpenError(RetryableError):
    """Too many failures in a row for this source in this batch: stop calling the vendor for now."""


class ContinuationInFlightError(RetryableError):
    """Another delivery of the same message is enqueueing the next page right now."""


class ParkMessageError(RetryableError):
    """The vendor asked for a wait longer than is worth sleeping in Lambda: park the message."""

    def __init__(self, message: str, *, delay_seconds: int) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PermanentError(ApilakeError):
    """Retrying cannot help (bad request, bad response, bad message): the message goes to the DLQ."""


class PermanentHttpError(PermanentError):
    """A 4xx other than 429, a refused redirect, or a response over the size limit."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BadResponseError(PermanentError):
    """The response is not JSON, or the records (or the total, cursor, next link) are not where the config says."""


class InvalidMessageError(PermanentError):
    """A queue message that this worker cannot process (wrong source, unknown source)."""


class PlanningError(ApilakeError):
    """The planner could not plan or enqueue one or more sources; the others were planned."""


# -- pydantic errors as messages ----------------------------------------------------------------
Location = tuple[int | str, ...]


def dotted(loc: Location) -> str:
    """pydantic's error location as a dotted path: ``("pagination", "cursor_path")`` -> ``pagination.cursor_path``."""
    return ".".join(str(part) for part in loc)


def describe_validation_error(
    origin: str, error: ValidationError, *, locate: Callable[[Location], str] = dotted, whole: str = "(root)"
) -> str:
    """Each of a pydantic error's problems on a line of its own, as ``origin: location: message``.

    ``origin`` is what was read (``sources.yaml``, ``planner event``, ``environment``); ``locate``
    names the place in it (a field path, a source, an environment variable); ``whole`` stands for
    the document itself, when the problem is not in one field.
    """
    return "\n".join(f"{origin}: {locate(tuple(err['loc'])) or whole}: {err['msg']}" for err in error.errors())


class CredentialsError(ConfigError, PermanentError):
    """A source's secret is missing, empty or unusable. The message names the source and the secret, never
    its value; permanent, so that a worker fails the page with this reason (and the planner the source)."""
