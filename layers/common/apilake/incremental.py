"""Incremental sources: the values of a source's cursor field, the window a run asks the vendor for, and
the largest value each landed page holds.

A run of an incremental source has one shard, named after its window (``since-<value>``, or
``since-<value>_until-<value>`` for a manual run's explicit window): the key layout stays
``raw/source=S/ingestion_date=D/shard=<shard>/page=N`` (decision 2), and two runs of one ingestion date
that ask for different windows land side by side instead of overwriting each other's pages. The worker
reads the window back from the shard, so a work item carries nothing new.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apilake.exceptions import BadResponseError
from apilake.records import ObservedRecords, find

if TYPE_CHECKING:
    from apilake.config import Incremental

Value = datetime | int | float
SHARD_PREFIX = "since-"
_UNTIL = "_until-"
_TOKEN_TIME = "%Y%m%dT%H%M%SZ"
_WINDOW_SHARD = re.compile(r"^since-(?P<since>[0-9A-Za-z.+-]{1,40})(?:_until-(?P<until>[0-9A-Za-z.+-]{1,40}))?$")


def parse_value(config: Incremental, raw: Any) -> Value:
    """A cursor value as the sources file, a record or the ledger gives it; ValueError when it is not one
    of ``config.format``: an ISO 8601 timestamp (UTC when it names no zone) or a number (or a number's text)."""
    if config.format == "timestamp":
        if not isinstance(raw, str):
            raise ValueError(f"expected an ISO 8601 timestamp, got {type(raw).__name__} {raw!r}")
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {raw!r}") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"expected a number, got {type(raw).__name__} {raw!r}")
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"not a number: {raw!r}") from None
    return raw


def to_json(value: Value) -> str | int | float:
    """How the ledger stores a value: timestamps as ISO 8601 text in UTC, numbers as numbers."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def minus_overlap(config: Incremental, value: Value) -> Value:
    """The value to ask from: the mark less the overlap that catches late writes."""
    if isinstance(value, datetime):
        return value - timedelta(seconds=config.overlap)
    overlap = int(config.overlap) if float(config.overlap).is_integer() else config.overlap
    return value - overlap


def param_text(config: Incremental, value: Value) -> str:
    """How a value is sent to the vendor."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(config.param_format)
    return str(value)


def _token(value: Value) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(_TOKEN_TIME)  # whole seconds, rounded down: never asks for less
    return repr(value)


def _from_token(config: Incremental, token: str) -> Value:
    if config.format == "timestamp":
        return datetime.strptime(token, _TOKEN_TIME).replace(tzinfo=UTC)
    return parse_value(config, token)


def window_shard(since: Value, until: Value | None = None) -> str:
    """The shard of a run that asks for records after ``since`` (and up to ``until``)."""
    return SHARD_PREFIX + _token(since) + (_UNTIL + _token(until) if until is not None else "")


def is_window_shard(shard: str) -> bool:
    return shard.startswith(SHARD_PREFIX)


def window_of(config: Incremental, shard: str) -> tuple[Value, Value | None]:
    """(since, until) of a window shard."""
    match = _WINDOW_SHARD.match(shard)
    if match is None:
        raise ValueError(f"not an incremental window shard: {shard!r}")
    until = match["until"]
    return _from_token(config, match["since"]), None if until is None else _from_token(config, until)


def window_params(config: Incremental, shard: str) -> dict[str, str]:
    """The query parameters of a window shard: records after ``since`` (and up to ``until``)."""
    since, until = window_of(config, shard)
    params = {config.param: param_text(config, since)}
    if until is not None and config.end_param is not None:
        params[config.end_param] = param_text(config, until)
    return params


class HighWater(ObservedRecords):
    """A page's records, as the lake writer reads them (once, as it encodes them), noting the largest
    value of the cursor field on the way: a large page's lazily parsed records are not parsed twice.
    A record without the field, or with a value of another format, is a permanent error: its page could
    otherwise move the mark past records it never saw."""

    def __init__(self, records: Sequence[Any], config: Incremental) -> None:
        super().__init__(records)
        self._config = config
        self.highest: Value | None = None

    def __iter__(self) -> Iterator[Any]:
        for record in self._records:
            self._observe(record)
            yield record

    def _observe(self, record: Any) -> None:
        path = self._config.cursor_path
        raw = find(record, path, f"incremental cursor ({path})")
        try:
            value = parse_value(self._config, raw)
        except ValueError as exc:
            raise BadResponseError(f"incremental cursor at {path!r} of a record: {exc}") from None
        if self.highest is None or value > self.highest:  # type: ignore[operator]
            self.highest = value
