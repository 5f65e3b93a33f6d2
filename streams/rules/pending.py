"""A charge on its way from a decoded record to its rows: the keys of the rows it feeds, where it
was read, and its idempotency key.

Plain tuples (NamedTuples built in C by the decoder), because a worker holds tens of thousands
of them per flush and the rules in `streams.rules.settle` read them once each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime
from typing import NamedTuple


class DailyKey(NamedTuple):
    """The key of one daily row (equal to, and hashing as, the plain tuple of its fields)."""

    account_id: str
    user_id: str
    provider: str
    date: date
    charge_type: str


class ModelKey(NamedTuple):
    """The key of one row by model: the daily key and the model the charges named."""

    account_id: str
    user_id: str
    provider: str
    model: str
    date: date
    charge_type: str


Coordinates = tuple[int, int, int]  # source id, offset, position in the record
# Summed per row, in this order (the last two came later and were appended, so older code that
# reads the first five by position stays right).
SUMMED = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "reported_cost_nanos",
)


class PendingCharge(NamedTuple):
    """One accepted charge waiting for its flush, with where it was read."""

    dedup_key: bytes
    partition: int
    offset: int
    position: int
    account_id: str
    user_id: str
    provider: str
    day: date
    charge_type: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    event_id: str
    accept_late: bool = False  # an operator re-drove it with the late horizon lifted
    model: str = ""  # as priced: trimmed, lower-case ('' when the charge names none)
    occurred_at: datetime | None = None  # picks the price in force
    cache_write_tokens: int = 0
    reported_cost_nanos: int = 0  # what the caller's tooling said it cost (0: nothing said)

    @property
    def daily_key(self) -> DailyKey:
        return DailyKey(self.account_id, self.user_id, self.provider, self.day, self.charge_type)

    @property
    def model_key(self) -> ModelKey:
        return ModelKey(self.account_id, self.user_id, self.provider, self.model, self.day, self.charge_type)


#: The cost of a charge in nano-units and its currency, or None when its model has no price.
Pricer = Callable[[PendingCharge], tuple[int, str] | None]


def dedup_key(account_id: str, event_id: str) -> bytes:
    """The idempotency key, scoped by account: 16 bytes instead of two texts in the ledger."""
    a, e = account_id.encode(), event_id.encode()
    return hashlib.blake2b(len(a).to_bytes(4, "big") + a + e, digest_size=16).digest()
