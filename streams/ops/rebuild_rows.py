"""How `billing rebuild` makes the rows of a date range say exactly what the topic says.

Used for both daily tables (`daily_billing_records` and, by model, `daily_model_records`), with
the sums, counts and cost recomputed by `streams.rules.settle` and the current price book. A row whose
values are unchanged is left alone (not even `updated_at` moves); a changed row gets
`revision + 1` and a new `updated_at`, so an invoice export sees it; a row the topic no longer
supports is deleted; a new one is inserted, final at once when its day is closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import asyncpg

from streams.rules.settle import RowDelta
from streams.sink.sql import REBUILD_COUNTED as COUNTED
from streams.sink.sql import RowTable


@dataclass(slots=True)
class Replaced:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


def _values(d: RowDelta) -> tuple[object, ...]:
    return (*d.sums, d.charge_count, d.late_charge_count, d.cost_nanos, d.unpriced_charge_count, d.currency)


async def replace_rows(
    conn: asyncpg.Connection,
    table: RowTable,
    fresh: Mapping[tuple[object, ...], RowDelta],
    first: date,
    last: date,
    closed: date | None,
) -> Replaced:
    """Make the table's rows of [first, last] equal `fresh` (inside the caller's transaction)."""
    todo = dict(fresh)
    out = Replaced()
    deletes: list[int] = []
    updates: list[list[object]] = [[] for _ in range(len(COUNTED) + 4)]
    day_at = table.key.index("date")
    for old in await conn.fetch(table.old_rows, first, last):
        key = tuple(old[c] for c in table.key)
        delta = todo.pop(key, None)
        if delta is None:
            deletes.append(old["id"])
            continue
        values = _values(delta)
        changed = values != (*(old[c] for c in COUNTED), old["currency"])
        finalize = old["finalized_at"] is None and closed is not None and old["date"] <= closed
        if not (changed or finalize):
            out.unchanged += 1
            continue
        revision = old["revision"] + (1 if changed else 0)
        for column, value in zip(updates, [old["id"], *values, revision, finalize], strict=True):
            column.append(value)
    inserts: list[list[object]] = [[] for _ in range(len(table.key) + len(COUNTED) + 2)]
    for key, delta in sorted(todo.items()):
        final = closed is not None and key[day_at] <= closed  # type: ignore[operator]
        for column, value in zip(inserts, [*key, *_values(delta), final], strict=True):
            column.append(value)
    if deletes:
        await conn.execute(table.delete, deletes)
    if updates[0]:
        await conn.execute(table.update, *updates)
    if inserts[0]:
        await conn.execute(table.insert, *inserts)
    out.deleted, out.updated, out.inserted = len(deletes), len(updates[0]), len(inserts[0])
    return out
