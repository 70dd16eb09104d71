"""The text a vendor receives for a scalar written in a source's ``params`` or ``headers``.

YAML reads ``per_page: 200`` as an integer and ``expand: true`` as a boolean; the request carries text.
Strings go out unchanged (so the request fingerprint of an existing config does not move), integers in
decimal, booleans as ``true`` / ``false`` (the common REST convention, not Python's ``True``), floats in
positional notation with the fewest digits that read back as the same number (``0.0000001``, never
``1e-07``). Anything else (null, a list, a mapping, a YAML date) is refused: quote it to send it as written.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator

ParamScalar = str | bool | int | float


def param_text(value: object) -> str:
    """The text sent for ``value``; ValueError (worded for the config's error) when it is not a scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value}")
        # repr gives the shortest digits that round-trip; Decimal's "f" lays them out without an exponent.
        return format(Decimal(repr(value)), "f")
    raise ValueError(f"must be a string, a number or a boolean, not {_kind(value)}")


def _kind(value: object) -> str:
    if value is None:
        return "null (write '' for an empty value)"
    if isinstance(value, (date, datetime)):
        return "a date (quote it to send it as written)"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


# A value of ``params`` / ``headers``: any scalar in the file, always text once validated.
ParamValue = Annotated[str, BeforeValidator(param_text, json_schema_input_type=ParamScalar)]
