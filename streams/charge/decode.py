"""Bytes on the topic -> valid charges plus one rejection per bad part (never an exception).

A record's value is one charge (a JSON object) or a batch of one account's charges (a JSON
array). The happy path validates a whole batch in one pydantic-core call; only when that fails
is each element validated alone, so one bad element costs its own charge, not its neighbours.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from schemas.charge import CONTROL_CHARACTERS, Charge
from streams.charge.json_input import load_json
from streams.charge.windows import billing_date
from streams.errors import JsonInputError

MAX_CHARGE_BYTES = 64 * 1024

_BATCH = TypeAdapter(list[Charge])

# pydantic error type -> the reason an operator filters the DLQ by.
_REASONS = {
    "timezone_aware": "naive_timestamp",
    "datetime_parsing": "bad_timestamp",
    "datetime_from_date_parsing": "bad_timestamp",
    "datetime_type": "bad_timestamp",
    "greater_than_equal": "negative_count",
    "less_than_equal": "count_too_large",
    "int_type": "wrong_type",
    "int_from_float": "wrong_type",
    "int_parsing": "wrong_type",
    "string_type": "wrong_type",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "string_pattern_mismatch": "bad_slug",
    "string_too_short": "empty_field",
    "string_too_long": "field_too_long",
    "string_unicode": "invalid_text",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record (index None) or one batch element (index i) was refused."""

    reason: str
    detail: str
    index: int | None
    payload: bytes


@dataclass(slots=True)
class Decoded:
    charges: list[Charge] = field(default_factory=list)
    # Each accepted charge's position in the record: with (partition, offset) it names the
    # charge, so two copies of one event inside a single batch record stay two, not one.
    positions: list[int] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    """The time rules, resolved against one `now` so decoding stays pure.

    The worker passes the record's own timestamp as `now` (the broker's append time where the
    topic is stamped so) and no late horizon: a verdict must depend on the record alone, so that
    a replay and a rebuild reach it again, and the late horizon is judged by the sink from the
    recorded day closures (`streams.rules.settle`). A producer checks both against its own clock, as
    advice before sending. `waived` holds the rules an operator lifted for a redriven record.
    """

    now: datetime
    max_clock_skew: timedelta
    zone: ZoneInfo
    late_horizon: timedelta | None
    waived: frozenset[str] = frozenset()

    @classmethod
    def for_record(
        cls, stamp: datetime, max_clock_skew: timedelta, zone: ZoneInfo, waived: frozenset[str] = frozenset()
    ) -> Limits:
        """The rules a worker applies to a record stamped `stamp`: no late horizon at decode time
        (the sink judges it from the recorded closures), the clock skew against the stamp."""
        return cls(stamp, max_clock_skew, zone, None, waived)

    @property
    def oldest_date(self) -> date | None:
        """Charges billed on an earlier day are `too_late` (DLQ, for an operator to re-drive)."""
        if self.late_horizon is None or "too_late" in self.waived:
            return None
        return billing_date(self.now - self.late_horizon, self.zone)


_IDENTIFIERS = frozenset({"event_id", "account_id", "user_id"})
_CONTROL = re.compile(CONTROL_CHARACTERS.join("[]"))


def _identifier_reason(error: ValidationError) -> str | None:
    """An identifier refused by its pattern: say whether a control character or surrounding
    space is to blame (the value itself is never echoed)."""
    first = error.errors(include_url=False)[0]
    loc = first["loc"]
    if first["type"] != "string_pattern_mismatch" or not loc or loc[-1] not in _IDENTIFIERS:
        return None
    value = first.get("input")
    return "control_character" if isinstance(value, str) and _CONTROL.search(value) else "surrounding_space"


def classify(error: ValidationError) -> tuple[str, str]:
    """(reason, detail) for a pydantic error, without echoing the input values."""
    errors = error.errors(include_url=False, include_input=False)
    first = errors[0]
    reason = _identifier_reason(error) or _REASONS.get(first["type"], "invalid_charge")
    if first["type"] == "value_error":
        msg = str(first.get("msg", ""))
        if "total_tokens" in msg:
            reason = "total_mismatch"
        elif "naive" in msg:
            reason = "naive_timestamp"
        elif "exceed" in msg:
            reason = "token_parts_exceed"
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "charge"
        parts.append(f"{loc}: {err['msg']}")
    if len(errors) > 3:
        parts.append(f"(+{len(errors) - 3} more)")
    return reason, "; ".join(parts)


def _element_bytes(element: Any) -> bytes:
    return json.dumps(element, separators=(",", ":"), default=str).encode()


def element_bytes(raw: bytes, position: int) -> bytes:
    """The bytes of one charge of a record: the record itself for a single charge, else the
    element at `position` of its array (for a dead letter decided after decoding)."""
    if raw[:1] != b"[":
        return raw
    try:
        return _element_bytes(json.loads(raw)[position])
    except (ValueError, IndexError, TypeError, RecursionError):
        return raw


def _check_rules(charge: Charge, key: str | None, limits: Limits) -> tuple[str, str] | None:
    if key is not None and charge.account_id != key:
        return "key_mismatch", "account_id differs from the record key (the key must be the account_id)"
    if charge.occurred_at - limits.now > limits.max_clock_skew and "future_timestamp" not in limits.waived:
        return "future_timestamp", (
            f"occurred_at is more than {limits.max_clock_skew} ahead of the record's timestamp"
        )
    try:
        day = billing_date(charge.occurred_at, limits.zone)
    except OverflowError:
        return "bad_timestamp", "occurred_at is out of the representable range"
    oldest = limits.oldest_date
    if oldest is not None and day < oldest:
        return "too_late", f"billing date {day} is older than the late horizon ({oldest})"
    return None


def _decode_fast(raw: bytes, key: str, limits: Limits) -> list[Charge] | None:
    """The common case in one pydantic-core call straight from the bytes: every charge valid.

    None sends the record down the element-by-element path, which names each problem. A valid
    charge's fields are bounded far below 64 KiB, so the size rule can only fail on the raw
    bytes of a single-charge record, checked here first.
    """
    head = raw[:1]
    try:
        if head == b"[":
            charges = _BATCH.validate_json(raw)
        elif head == b"{" and len(raw) <= MAX_CHARGE_BYTES:
            charges = [Charge.model_validate_json(raw)]
        else:
            return None
    except (ValueError, RecursionError):
        return None
    if not charges or any(_check_rules(c, key, limits) for c in charges):
        return None
    return charges


def decode_record(value: bytes | None, key: bytes | None, limits: Limits) -> Decoded:
    """Split one Kafka record into charges to count and rejections for the DLQ."""
    out = Decoded()
    raw = value or b""
    if key is None:
        out.rejections.append(Rejection("missing_key", "record key must be the account_id", None, raw))
        return out
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        out.rejections.append(Rejection("invalid_key", "record key is not UTF-8", None, raw))
        return out
    fast = _decode_fast(raw, key_text, limits)
    if fast is not None:
        out.charges = fast
        out.positions = list(range(len(fast)))
        return out
    try:
        parsed = load_json(raw)
    except JsonInputError as exc:
        out.rejections.append(Rejection(exc.reason, exc.detail, None, raw))
        return out

    if isinstance(parsed, dict):
        if len(raw) > MAX_CHARGE_BYTES:
            out.rejections.append(Rejection("too_large", f"{len(raw)} bytes > 64 KiB", None, raw))
            return out
        elements: list[Any] = [parsed]
        single = True
    elif isinstance(parsed, list) and parsed:
        elements = parsed
        single = False
    else:
        out.rejections.append(
            Rejection("not_an_object", "value must be a JSON object or a non-empty array", None, raw)
        )
        return out

    for index, element in enumerate(elements):
        where = None if single else index
        if not single and isinstance(element, dict | list):
            size = len(_element_bytes(element))
            if size > MAX_CHARGE_BYTES:
                out.rejections.append(
                    Rejection("too_large", f"{size} bytes > 64 KiB", where, _element_bytes(element))
                )
                continue
        try:
            charge = Charge.model_validate(element)
        except ValidationError as exc:
            reason, detail = classify(exc)
            payload = raw if single else _element_bytes(element)
            out.rejections.append(Rejection(reason, detail, where, payload))
            continue
        broken = _check_rules(charge, key_text, limits)
        if broken:
            payload = raw if single else _element_bytes(element)
            out.rejections.append(Rejection(broken[0], broken[1], where, payload))
        else:
            out.charges.append(charge)
            out.positions.append(index)
    return out
