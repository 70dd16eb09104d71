"""The small error hierarchy of apilake.

What matters is the split between *retryable* errors (the message goes back to its queue and is
delivered again) and *permanent* ones (retrying cannot help: the message fails, is retried by SQS
up to maxReceiveCount and ends in the DLQ with the reason logged). And one way to say what a
pydantic model refused (sources file, planner event, environment): ``origin: location: message``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails


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
    origin: str,
    error: ValidationError,
    *,
    locate: Callable[[Location], str] = dotted,
    whole: str = "(root)",
    position: Callable[[Location, str], str] | None = None,
    fields: Callable[[Location], Collection[str]] | None = None,
    tags: Callable[[Location], Collection[str]] | None = None,
) -> str:
    """Each of a pydantic error's problems on a line of its own, as ``origin: location: message``.

    ``origin`` is what was read (``sources.yaml``, ``planner event``, ``environment``); ``locate``
    names the place in it (a field path, a source, an environment variable); ``whole`` stands for
    the document itself, when the problem is not in one field. ``position`` (given the location and
    pydantic's error type) says where it is in the text read, ``12:5`` (``origin:12:5: ...``), or "";
    ``fields`` (given an unknown field's location) the fields allowed there, to suggest the closest;
    ``tags`` (given a tagged union's location) its tags, to list them when the tag is missing.
    A wrong or missing tag of a tagged union is located at the tag's field (``pagination.type``); a
    misspelt tag, literal or enum value, or field, ends with "(did you mean 'cursor'?)".
    """
    lines = []
    for err in error.errors():
        loc: Location = tuple(err["loc"])
        ctx, message = err.get("ctx") or {}, err["msg"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found") and "discriminator" in ctx:
            tag = str(ctx["discriminator"]).strip("'")
            if err["type"] == "union_tag_not_found":
                message = f"Field required{_one_of(tags(loc) if tags else ())}"
            loc = (*loc, tag)
        elif err["type"] == "model_attributes_type" and tags and (allowed := tags(loc)):
            message += _not_a_mapping(err["input"], allowed)
        at = position(loc, err["type"]) if position else ""
        lines.append(f"{origin}{':' + at if at else ''}: {locate(loc) or whole}: {message}{_hint(err, fields)}")
    return "\n".join(lines)


def _one_of(allowed: Collection[str]) -> str:
    """``: one of 'a', 'b'`` (nothing when there is no choice to list)."""
    return ": one of " + ", ".join(repr(tag) for tag in allowed) if allowed else ""


def _not_a_mapping(written: object, allowed: Collection[str]) -> str:
    """What a tagged union wants when given a scalar: `` (write {type: single})`` for a tag alone, else the tags."""
    if isinstance(written, str) and written in allowed:
        return f" (write {{type: {written}}})"
    return f" (a mapping with type{_one_of(allowed)})"


def _hint(err: ErrorDetails, fields: Callable[[Location], Collection[str]] | None) -> str:
    """`` (did you mean 'x'?)`` for a misspelt field, tag, literal or enum value; else ""."""
    ctx, written = err.get("ctx") or {}, err["input"]
    if err["type"] == "extra_forbidden" and fields and err["loc"]:
        written, choices = err["loc"][-1], list(fields(tuple(err["loc"])))
    elif err["type"] in ("union_tag_invalid", "literal_error", "enum"):
        written = ctx.get("tag", written)
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags") or ctx.get("expected") or ""))
    else:
        return ""
    if not isinstance(written, str):
        return ""
    import difflib  # here: only a misspelt name needs it, and a cold start has none

    by_folded = {choice.casefold(): choice for choice in reversed(choices)}  # case aside: 'Cursor' is 'cursor'
    close = difflib.get_close_matches(written.casefold(), list(by_folded), n=1, cutoff=0.65)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


def field_error(model: BaseModel, field: str | Location, message: str) -> ValidationError:
    """The error a model validator raises for one of its fields (a check across fields): pydantic reports it at
    that field (``pagination.cursor_path``), not at the model, with the message of a ``ValueError``::

        raise field_error(self, "cursor_path", "give cursor_path or cursor_field")
        raise field_error(self, ("sources", 3, "name"), "...")  # deeper: the path from the model
    """
    loc = (field,) if isinstance(field, str) else field
    value = getattr(model, field, None) if isinstance(field, str) else None
    detail = InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": message})
    return ValidationError.from_exception_data(type(model).__name__, [detail])


class CredentialsError(ConfigError, PermanentError):
    """A source's secret is missing, empty or unusable. The message names the source and the secret, never
    its value; permanent, so that a worker fails the page with this reason (and the planner the source)."""
