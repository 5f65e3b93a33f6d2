"""What a flush hands to Postgres and reports back: the deltas as column arrays for the upserts,
the days each partition fed, and the flush's result. Pure, so the sink's transaction stays a
sequence of statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from streams.rules.batch import Batch
from streams.rules.settle import RowDelta


@dataclass(frozen=True, slots=True)
class FlushResult:
    charges: int
    duplicates: int
    rows_written: int
    seconds: float
    late: int = 0  # charges added to an already-final day (counted for metrics only)
    unpriced: tuple[tuple[str, str, int], ...] = ()  # (provider, model, charges) without a price
    cost_nanos: int = 0  # what the committed charges cost, in nano-units of `currency`
    currency: str | None = None

    @classmethod
    def total(cls, results: list[FlushResult]) -> FlushResult:
        """One result for shares of a batch committed side by side (the slowest one's time)."""
        return cls(
            sum(r.charges for r in results),
            sum(r.duplicates for r in results),
            sum(r.rows_written for r in results),
            max(r.seconds for r in results),
            sum(r.late for r in results),
            tuple(u for r in results for u in r.unpriced),
            sum(r.cost_nanos for r in results),
            next((r.currency for r in results if r.currency), None),
        )


def delta_row(d: RowDelta) -> tuple[object, ...]:
    """A delta in the column order of the upserts (`sql.UPSERT`, `sql.UPSERT_MODELS`)."""
    return (
        *d.key,
        *d.sums,
        d.charge_count,
        d.late_charge_count,
        d.cost_nanos,
        d.unpriced_charge_count,
        d.currency,
    )


def delta_columns(deltas: list[RowDelta]) -> list[list[object]]:
    """Deltas column by column (as `delta_row` orders a delta's values), rows in key order (the
    index's: B-trees take it faster). Built column-wise: a flush writes a delta per daily row and
    per row by model, and a tuple per delta, sorted whole, cost the worker a tenth of its time."""
    ordered = sorted(deltas, key=_by_key)
    columns: list[list[object]] = [list(c) for c in zip(*(d.key for d in ordered), strict=True)]
    columns += [list(c) for c in zip(*(d.sums for d in ordered), strict=True)]
    columns.append([d.charge_count for d in ordered])
    columns.append([d.late_charge_count for d in ordered])
    columns.append([d.cost_nanos for d in ordered])
    columns.append([d.unpriced_charge_count for d in ordered])
    columns.append([d.currency for d in ordered])
    return columns


def _by_key(d: RowDelta) -> tuple[object, ...]:
    return d.key


def days_by_partition(batch: Batch) -> dict[int, tuple[date, date]]:
    """The first and last billing day of the charges each partition brought."""
    out: dict[int, tuple[date, date]] = {}
    for r in batch.rows:
        span = out.get(r.partition)
        if span is None:
            out[r.partition] = (r.day, r.day)
        elif r.day < span[0] or r.day > span[1]:
            out[r.partition] = (min(span[0], r.day), max(span[1], r.day))
    return out
