"""What a flush hands to Postgres and reports back: the deltas as the rows of the staging tables,
the days each partition fed, and the flush's result. Pure, so the sink's transaction stays a
sequence of statements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from streams.rules.batch import Batch
from streams.rules.settle import RowValues


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


def staging_records(
    values: Mapping[tuple[object, ...], RowValues], currency: Mapping[tuple[object, ...], str]
) -> list[tuple[object, ...]]:
    """Rows' values (`streams.rules.settle.RowValues` by key) as the rows of a staging table
    (`sql.STAGE_DAILY`, `sql.STAGE_MODELS`), in key order: the index's, which a B-tree takes
    faster. Keys are unique, so the sort never compares the values."""
    return [(*k, *v, currency.get(k)) for k, v in sorted(values.items())]


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
