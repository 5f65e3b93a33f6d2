"""What one flush adds to which daily row: the exactness rules as pure functions.

The sink runs them inside its flush transaction, between reading what Postgres knows (the
sources' offset fences and closure marks, the dedup winners; all under the partitions' locks)
and writing the result; `billing rebuild` runs the same functions over the whole topic. The
argument for why they make every charge count exactly once is in docs/architecture.md; in short:

- a charge read from a source at or below that source's fence was applied before (a re-read):
  it is skipped, whatever row it belongs to;
- a charge whose day was closed more than the late horizon before the charge was applied is
  `too_late` (to the DLQ), unless the record carries an operator's acceptance;
- of the copies of one idempotency key (account_id, event_id), only the copy recorded as the
  winner in the dedup ledger counts; the others are duplicates;
- a counted charge is late when its day had closed before its source reached it (the closure
  mark of its source), so a replay and a rebuild reach the same verdict as the first read;
- only a counted charge is priced (`streams.rules.price_book`), and its cost, an integer, is
  summed into its daily row and its row by model like its tokens: what is skipped or a
  duplicate costs nothing, and the sums do not depend on how charges were batched.

Everything is compared within one source only: a source is one incarnation of one partition of
one topic, so partitioners, topic cut-overs and brokers that come back empty cannot mix fences.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from streams.rules.pending import (
    SUMMED,
    Coordinates,
    DailyKey,
    ModelKey,
    PendingCharge,
    Pricer,
)


@dataclass(frozen=True, slots=True)
class ClosureMarks:
    """Where one source stood each time days were closed, ascending.

    `through[i]` was closed once the source had applied every offset up to `applied[i]`; both
    only grow, since a source is read in order and days never reopen.
    """

    through: tuple[date, ...] = ()
    applied: tuple[int, ...] = ()

    def closed_before(self, offset: int) -> date | None:
        """The last day that was already closed when the charge at `offset` was applied."""
        at = bisect.bisect_left(self.applied, offset) - 1
        return self.through[at] if at >= 0 else None


def closure_marks(rows: Iterable[tuple[int, date, int]]) -> dict[int, ClosureMarks]:
    """(source id, closed_through, applied_offset) rows into marks per source."""
    per: dict[int, list[tuple[date, int]]] = {}
    for source, through, applied in rows:
        per.setdefault(source, []).append((through, applied))
    out = {}
    for source, marks in per.items():
        marks.sort()
        out[source] = ClosureMarks(tuple(m[0] for m in marks), tuple(m[1] for m in marks))
    return out


NO_MARKS = ClosureMarks()


def is_too_late(charge: PendingCharge, closed: date | None, horizon_days: int) -> bool:
    """Its day had been closed for the whole late horizon before the charge was applied."""
    return not charge.accept_late and closed is not None and (closed - charge.day).days >= horizon_days


@dataclass(slots=True)
class Admission:
    admitted: list[PendingCharge]
    too_late: list[PendingCharge]
    reread: int  # charges at or below their source's fence


def admit(
    charges: Iterable[PendingCharge],
    sources: Mapping[int, int],
    fences: Mapping[int, int],
    marks: Mapping[int, ClosureMarks],
    horizon_days: int,
) -> Admission:
    """Drop re-reads (at or below the fence of their source) and set aside the too-late ones.

    `sources` maps a partition to its current source id, `fences` a source id to the last offset
    it applied. The too-late verdict uses only the recorded closure marks and the charge's
    coordinates, so a replay, a rebuild and the first read agree on it.
    """
    admitted: list[PendingCharge] = []
    too_late: list[PendingCharge] = []
    reread = 0
    for c in charges:
        source = sources[c.partition]
        if c.offset <= fences.get(source, -1):
            reread += 1
        elif is_too_late(c, marks.get(source, NO_MARKS).closed_before(c.offset), horizon_days):
            too_late.append(c)
        else:
            admitted.append(c)
    return Admission(admitted, too_late, reread)


def first_sightings(charges: Iterable[PendingCharge], sources: Mapping[int, int]) -> dict[bytes, Coordinates]:
    """Per idempotency key, the smallest coordinates it has in this batch: the copy that counts
    when the ledger has no winner for it yet."""
    first: dict[bytes, Coordinates] = {}
    for c in charges:
        where = (sources[c.partition], c.offset, c.position)
        known = first.get(c.dedup_key)
        if known is None or where < known:
            first[c.dedup_key] = where
    return first


# What a flush adds to one row, while it is summed: the sums in SUMMED order, then COUNTED, as
# one list of integers (the order of the staging tables' columns after the key). A flush makes
# nearly as many rows as it has charges, and an object per row cost more than its sums.
COUNTED = ("charge_count", "late_charge_count", "cost_nanos", "unpriced_charge_count")
_CHARGES, _LATE, _COST, _UNPRICED = range(len(SUMMED), len(SUMMED) + len(COUNTED))
RowValues = list[int]


@dataclass(slots=True)
class RowDelta:
    """What one flush adds to one daily row (or one row by model), by name."""

    key: DailyKey | ModelKey
    sums: list[int] = field(default_factory=lambda: [0] * len(SUMMED))  # in SUMMED order
    charge_count: int = 0
    late_charge_count: int = 0
    cost_nanos: int = 0
    unpriced_charge_count: int = 0
    currency: str | None = None  # of the priced charges (a book has one currency)

    @classmethod
    def of(cls, key: DailyKey | ModelKey, values: RowValues, currency: str | None) -> RowDelta:
        n = len(SUMMED)
        return cls(
            key, values[:n], values[_CHARGES], values[_LATE], values[_COST], values[_UNPRICED], currency
        )


@dataclass(slots=True)
class Settlement:
    """What a flush adds, per row by model and per daily row: `RowValues` by the plain tuple of
    the row's key, and the currency of each row with a priced charge."""

    by_model: dict[tuple[object, ...], RowValues]
    by_day: dict[tuple[object, ...], RowValues]
    model_currency: dict[tuple[object, ...], str]
    day_currency: dict[tuple[object, ...], str]
    duplicates: int  # charges whose idempotency key counts elsewhere
    late: int  # counted charges of days that were already closed

    @property
    def deltas(self) -> list[RowDelta]:
        """The daily deltas, by name."""
        return [RowDelta.of(_as_daily_key(k), v, self.day_currency.get(k)) for k, v in self.by_day.items()]

    @property
    def model_deltas(self) -> list[RowDelta]:
        """The deltas by model, by name."""
        return [
            RowDelta.of(_as_model_key(k), v, self.model_currency.get(k)) for k, v in self.by_model.items()
        ]

    @property
    def cost_nanos(self) -> int:
        return sum(v[_COST] for v in self.by_day.values())

    @property
    def currency(self) -> str | None:
        return next(iter(self.day_currency.values()), None)


def settle(
    charges: Iterable[PendingCharge],
    sources: Mapping[int, int],
    winners: Mapping[bytes, Coordinates],
    marks: Mapping[int, ClosureMarks],
    pricer: Pricer | None = None,
) -> Settlement:
    """Sum the admitted charges that win their idempotency key, one delta per row by model and,
    rolled up from those, one per daily row, each with its cost (`pricer`; without one every
    charge is unpriced).

    `winners` maps every key of the batch to the coordinates that count (the ledger's winner,
    or the batch's own first sighting for a new key).
    """
    by_model: dict[tuple[object, ...], RowValues] = {}
    currency: dict[tuple[object, ...], str] = {}
    duplicates = late = 0
    for c in charges:
        source = sources[c.partition]
        if winners[c.dedup_key] != (source, c.offset, c.position):
            duplicates += 1
            continue
        closing = marks.get(source)  # None until a day closes while the source is read
        closed = None if closing is None else closing.closed_before(c.offset)
        is_late = closed is not None and c.day <= closed
        late += is_late
        priced = pricer(c) if pricer is not None else None
        # A plain tuple hashes and compares as the ModelKey it stands for.
        key = (c.account_id, c.user_id, c.provider, c.model, c.day, c.charge_type)
        v = by_model.get(key)
        if v is None:
            v = by_model[key] = [0] * (len(SUMMED) + len(COUNTED))
        # In SUMMED order, then COUNTED; inline: this runs once per charge.
        v[0] += c.prompt_tokens
        v[1] += c.completion_tokens
        v[2] += c.total_tokens
        v[3] += c.cached_tokens
        v[4] += c.reasoning_tokens
        v[5] += c.cache_write_tokens
        v[6] += c.reported_cost_nanos
        v[_CHARGES] += 1
        v[_LATE] += is_late
        if priced is None:
            v[_UNPRICED] += 1
        else:
            v[_COST] += priced[0]
            currency[key] = priced[1]
    by_day, day_currency = roll_up(by_model, currency)
    return Settlement(by_model, by_day, currency, day_currency, duplicates, late)


# NamedTuple keys built from plain tuples in C: `ModelKey._make` and `DailyKey(...)` run Python
# code, once per row.
def _as_model_key(values: tuple[object, ...]) -> ModelKey:
    return tuple.__new__(ModelKey, values)


def _as_daily_key(values: tuple[object, ...]) -> DailyKey:
    return tuple.__new__(DailyKey, values)


def roll_up(
    by_model: Mapping[tuple[object, ...], RowValues], currency: Mapping[tuple[object, ...], str]
) -> tuple[dict[tuple[object, ...], RowValues], dict[tuple[object, ...], str]]:
    """The daily rows' values (and currencies) from the rows by model: a daily row is the sum of
    its rows by model, so each charge is added once (to its row by model) and each daily row
    once per model."""
    by_day: dict[tuple[object, ...], RowValues] = {}
    day_currency: dict[tuple[object, ...], str] = {}
    for k, v in by_model.items():  # k: account, user, provider, model, date, type
        key = (k[0], k[1], k[2], k[4], k[5])
        day = by_day.get(key)
        if day is None:
            by_day[key] = v.copy()
        else:
            by_day[key] = [a + b for a, b in zip(day, v, strict=True)]
        priced_in = currency.get(k)
        if priced_in is not None and key not in day_currency:
            day_currency[key] = priced_in
    return by_day, day_currency


def horizon_days(horizon_seconds: float) -> int:
    """The late horizon in whole days (at least one): days close whole, so it is counted in days."""
    return max(1, int(horizon_seconds // 86400))
