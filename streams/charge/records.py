"""What producers write: valid charges, and records of one account's charges.

Batched because a Faust worker pays per record, not per charge: a record holds up to 500
charges (~1 MB) of one account, key = account_id, so that every charge of an account lands on
the same partition and a daily row is fed by one partition only (the sink's offset fence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.charge import Charge, new_event_id

MAX_RECORD_CHARGES = 500
# ~1 MB, not 1 MiB: Kafka's default message.max.bytes (1,048,588) must also hold key and overhead.
MAX_RECORD_BYTES = 1_000_000

# Measured (10k charges, pydantic 2.14): json.dumps(to_wire()) 182k/s, model_dump_json 538k/s,
# the model's serializer straight to bytes 772k/s, with the same JSON. So the last one.
_to_json = Charge.__pydantic_serializer__.to_json
_NO_CACHE_WRITES = {"cache_write_tokens"}  # left out when 0, as `Charge.to_wire` does

ProfileResolver = Callable[[Any], tuple[str, str]]
_profile_resolver: ProfileResolver | None = None


def set_profile_resolver(fn: ProfileResolver | None) -> None:
    """Install fn(user_profile_id) -> (account_id, user_id) for callers that only know a profile."""
    global _profile_resolver
    _profile_resolver = fn


def fill_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` with what a producer may leave out filled in: a fresh event_id (so a
    retry is idempotent only when the caller sends its own) and occurred_at = now (UTC)."""
    values = dict(data)
    if values.get("event_id") is None:
        values["event_id"] = new_event_id()
    if values.get("occurred_at") is None:
        values["occurred_at"] = datetime.now(UTC)
    return values


def to_charge(data: Charge | Mapping[str, Any], max_clock_skew: timedelta | None = None) -> Charge:
    """A valid Charge from a dict: event_id and occurred_at (now, UTC) filled in when absent.

    Beyond `max_clock_skew` in the future it is refused here, not in the worker's DLQ unseen.
    """
    if isinstance(data, Charge):
        charge = data
    else:
        values = fill_defaults(data)
        profile = values.get("user_profile_id")
        if profile is not None and (values.get("account_id") is None or values.get("user_id") is None):
            if _profile_resolver is None:
                raise ValueError(
                    "account_id/user_id missing and no profile resolver set: pass them, or call "
                    "streams.producer.producer.set_profile_resolver(fn) with fn(profile_id) -> (account, user)"
                )
            values["account_id"], values["user_id"] = _profile_resolver(profile)
        charge = Charge.model_validate(values)
    if max_clock_skew is not None and charge.occurred_at - datetime.now(UTC) > max_clock_skew:
        raise ValueError(f"occurred_at is more than {max_clock_skew} in the future")
    return charge


def encode_charge(charge: Charge) -> bytes:
    """Compact JSON of one charge, None fields left out (the shape `Charge.to_wire` gives)."""
    if charge.cache_write_tokens:
        return _to_json(charge, exclude_none=True)
    return _to_json(charge, exclude_none=True, exclude=_NO_CACHE_WRITES)


class OpenRecord:
    """One account's record while it fills: the limits are checked as charges come.

    `opened_at` (event-loop time) orders records by age, so that a producer can send the ones
    whose linger has passed without a timer per record; `attempts` counts deliveries tried.
    """

    __slots__ = ("attempts", "future", "key", "opened_at", "parts", "single", "size")

    def __init__(self, key: bytes, future: Any = None, single: bool = False, opened_at: float = 0.0) -> None:
        self.key, self.future, self.attempts = key, future, 0
        self.parts: list[bytes] = []
        self.opened_at = opened_at
        self.size = 1  # "[" ; each part adds its length plus one "," or "]"
        self.single = single  # batch=False: the one charge as a bare JSON object

    def fits(self, part: bytes, max_charges: int, max_bytes: int) -> bool:
        """An empty record takes anything: a lone oversized charge still gets its own record."""
        return not self.parts or (len(self.parts) < max_charges and self.size + len(part) + 1 <= max_bytes)

    def add(self, part: bytes) -> None:
        self.parts.append(part)
        self.size += len(part) + 1

    def value(self) -> bytes:
        return self.parts[0] if self.single else b"[" + b",".join(self.parts) + b"]"


def split_batches(
    charges: Iterable[Charge], max_charges: int = MAX_RECORD_CHARGES, max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[bytes, bytes]]:
    """(key, value) records per account in arrival order within both limits: the rule that
    `ChargeProducer` applies incrementally, as a pure function to test and reuse."""
    open_: dict[str, OpenRecord] = {}
    records: list[tuple[bytes, bytes]] = []
    for charge in charges:
        part = encode_charge(charge)
        rec = open_.get(charge.account_id)
        if rec is None or not rec.fits(part, max_charges, max_bytes):
            if rec is not None:
                records.append((rec.key, rec.value()))
            rec = open_[charge.account_id] = OpenRecord(charge.account_id.encode())
        rec.add(part)
    records.extend((rec.key, rec.value()) for rec in open_.values())
    return records
