"""Reading JSON bytes the way the worker does, for the worker and `billing produce` alike.

Why one function: `billing produce` once decoded lines itself, so it refused a UTF-8 BOM the
worker accepts and called a number too long to convert `invalid_json`. Both now read bytes here:
`json.loads` on bytes (UTF-8, a leading BOM allowed) and a named reason for each failure.
"""

from __future__ import annotations

import json
from typing import Any

from streams.errors import JsonInputError

#: Python refuses to convert integers longer than this (a guard against quadratic parsing).
MAX_INT_DIGITS = 4300


def load_json(raw: bytes) -> Any:
    """The JSON value in `raw`, or JsonInputError(reason, detail) without the input's values."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise JsonInputError("invalid_json", "nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise JsonInputError("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # valid JSON, but no count or id is that long
            raise JsonInputError(
                "number_too_long", f"a number has more than {MAX_INT_DIGITS} digits"
            ) from None
        raise JsonInputError("invalid_json", str(exc)[:200]) from None
