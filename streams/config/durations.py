"""Durations as operators write them: `500ms`, `2s`, `5m`, `1h`, `35d`, read into `timedelta`.

A unit is required (a bare `1` is refused, not read as one second), in a BILLING_* variable
and in `billing replay --from-timestamp '6h ago'` alike. `Duration` is the settings' field type
and `lasting` declares such a field with its default.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_EXAMPLES = "use e.g. 500ms, 2s, 5m, 1h, 35d"
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Read `2s`, `5m`, `1h`, `35d` into a timedelta.

    Text needs a unit (only `0` may go without): `BILLING_GRACE=1` once meant one second, when
    whoever wrote it may well have meant an hour. Numbers from Python code are seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"not a duration: {value!r} ({_EXAMPLES})")
    number, unit = match.groups()
    if unit is None and float(number) != 0:
        raise ValueError(f"not a duration: {value!r} has no unit ({_EXAMPLES})")
    unit = unit or "s"
    try:
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f"duration out of range: {value!r}") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def lasting(description: str, **amount: float) -> Any:
    """A Duration setting's field: its default as timedelta keywords, and what it controls."""
    return Field(timedelta(**amount), description=description)
