"""How `billing rebuild` makes the rows of a date range say exactly what the topic says.

Used for both daily tables (`daily_billing_records` and, by model, `daily_model_records`), with
the sums, counts and cost recomputed by `streams.settle` and the current price book. A row whose
values are unchanged is left alone (not even `updated_at` moves); a changed row gets
`revision + 1` and a new `updated_at`, so an invoice export sees it; a row the topic no longer
supports is deleted; a new one is inserted, final at once when its day is closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import asyncpg

from streams.settle import RowDelta
from streams.sink_sql import SUMMED

COUNTED = (*SUMMED, "charge_count", "late_charge_count", "cost_nanos", "unpriced_charge_count")


@dataclass(frozen=True, slots=True)
class RowTable:
    """One daily table: its name and the columns that make a row's key (fixed identifiers)."""

    name: str
    key: tuple[str, ...]

    @property
    def old_rows(self) -> str:
        columns = ", ".join((*self.key, *COUNTED))
        return (
            f"SELECT id, {columns}, currency, revision, finalized_at FROM {self.name} "  # noqa: S608
            "WHERE date BETWEEN $1 AND $2 ORDER BY id FOR UPDATE"
        )

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.name} WHERE id = ANY($1::bigint[])"  # noqa: S608

    @property
    def update(self) -> str:
        n = len(COUNTED)
        arrays = ", ".join(["$1::bigint[]", *(f"${i}::bigint[]" for i in range(2, n + 2))])
        tail = f"${n + 2}::text[], ${n + 3}::integer[], ${n + 4}::boolean[]"
        sets = ", ".join(f"{c} = u.{c}" for c in COUNTED)
        return f"""
UPDATE {self.name} d SET {sets}, currency = u.currency, revision = u.revision,
    finalized_at = coalesce(d.finalized_at, CASE WHEN u.final THEN now() END), updated_at = now()
FROM unnest({arrays}, {tail}) AS u(id, {", ".join(COUNTED)}, currency, revision, final)
WHERE d.id = u.id
"""  # noqa: S608

    @property
    def insert(self) -> str:
        types = [("date" if c == "date" else "text") for c in self.key] + ["bigint"] * len(COUNTED)
        types += ["text", "boolean"]
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
        columns = ", ".join((*self.key, *COUNTED))
        return f"""
INSERT INTO {self.name} ({columns}, currency, revision, finalized_at)
SELECT {columns}, currency, 0, CASE WHEN final THEN now() END
FROM unnest({arrays}) AS x({columns}, currency, final)
"""  # noqa: S608


DAILY = RowTable("daily_billing_records", ("account_id", "user_id", "provider", "date", "charge_type"))
BY_MODEL = RowTable(
    "daily_model_records", ("account_id", "user_id", "provider", "model", "date", "charge_type")
)


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
