"""Daily totals and their cost, read from `daily_billing_records` (or, to split or filter by
model, from `daily_model_records`, which holds the same sums by model), for `billing totals`, the
dashboard and the API.

The query builder is pure so the SQL can be tested without a database. Values only ever travel
as bound parameters ($1, $2, ...); column names come from the fixed `GROUP_COLUMNS` whitelist,
never from user text, so no option value can change the shape of the query.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import asyncpg

from streams import output_safety

#: Group-by name (what a user types) -> column of the daily tables (what SQL sees).
GROUP_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"date": "date", "account": "account_id", "user": "user_id", "provider": "provider"}
    | {"charge_type": "charge_type", "model": "model"}
)
#: Default grouping: one line per day, account, provider and charge type — the billable unit
#: of an invoice. Users are folded in; add `user` to split them out.
DEFAULT_GROUP_BY: tuple[str, ...] = ("date", "account", "provider", "charge_type")
#: Summed columns, in output order; `rows` and `final` follow them.
METRICS: tuple[str, ...] = tuple(
    [f"{kind}_tokens" for kind in ("prompt", "completion", "total", "cached", "cache_write", "reasoning")]
    + ["charge_count", "late_charge_count"]
)
#: Money, after the counts: charges without a price, the exact cost and its currency.
MONEY: tuple[str, ...] = ("unpriced_charge_count", "cost", "currency")
#: The integer columns of a result (a table sums them in its footer).
COUNTS: tuple[str, ...] = (*METRICS, "unpriced_charge_count", "rows")
_FILTERS: tuple[str, ...] = ("account", "user", "provider", "charge_type", "model")


@dataclass(frozen=True)
class TotalsQuery:
    """What to total. Empty filters match everything; dates are inclusive.

    `final_only` keeps only finalized rows (closed days), so the sums are what will be billed
    and cannot change except by late charges; provisional rows of open days are left out.
    """

    account: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    charge_type: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    currency: tuple[str, ...] = ()  # rows priced in these currencies (three-letter codes)
    date_from: date | None = None
    date_to: date | None = None
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    final_only: bool = False

    def __post_init__(self) -> None:
        # Accept a single string or any iterable, store tuples: the query stays hashable.
        for name in (*_FILTERS, "currency", "group_by"):
            value: str | Iterable[str] | None = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value or ()))


def parse_group_by(text: str) -> tuple[str, ...]:
    """Split `date,provider` into names; validation is left to `check_group_by`."""
    return tuple(part.strip().lower().replace("-", "_") for part in text.split(",") if part.strip())


def check_group_by(names: Sequence[str]) -> tuple[str, ...]:
    """Refuse names outside the whitelist (listing the valid ones) and repeated names."""
    valid = ", ".join(GROUP_COLUMNS)
    for name in names:
        if name not in GROUP_COLUMNS:
            raise ValueError(f"unknown group-by name {name!r}; valid names: {valid}")
    if len(set(names)) != len(names):
        raise ValueError(f"group-by names must not repeat: {', '.join(names)}")
    return tuple(names)


def output_columns(q: TotalsQuery) -> list[str]:
    """The keys of every result row, in order (also the CSV header)."""
    return [GROUP_COLUMNS[g] for g in check_group_by(q.group_by)] + [*METRICS, *MONEY, "rows", "final"]


def source_table(q: TotalsQuery) -> str:
    """The daily rows, or the same sums by model when the model is asked for."""
    return "daily_model_records" if "model" in q.group_by or q.model else "daily_billing_records"


def build_totals_sql(q: TotalsQuery) -> tuple[str, list[Any]]:
    """Return `(sql, params)` for asyncpg; every value is a bound `$n` parameter."""
    columns = [GROUP_COLUMNS[g] for g in check_group_by(q.group_by)]
    if q.date_from and q.date_to and q.date_from > q.date_to:
        raise ValueError(f"empty date range: from {q.date_from} is after to {q.date_to}")
    params: list[Any] = []
    where: list[str] = []

    def bind(value: Any, cast: str) -> str:
        params.append(value)
        return f"${len(params)}::{cast}"

    for name in _FILTERS:
        values = getattr(q, name)
        if values:
            where.append(f'"{GROUP_COLUMNS[name]}" = ANY({bind(list(values), "text[]")})')
    if q.currency:
        where.append(f'"currency" = ANY({bind([c.strip().upper() for c in q.currency], "text[]")})')
    if q.date_from is not None:
        where.append(f'"date" >= {bind(q.date_from, "date")}')
    if q.date_to is not None:
        where.append(f'"date" <= {bind(q.date_to, "date")}')
    if q.final_only:
        where.append("finalized_at IS NOT NULL")

    select = [f'"{c}"' for c in columns]
    select += [f'COALESCE(sum("{m}"), 0)::bigint AS "{m}"' for m in METRICS]
    select += [
        'COALESCE(sum("unpriced_charge_count"), 0)::bigint AS "unpriced_charge_count"',
        # Exact: whole nano-units summed as integers, shown with nine decimals.
        'round(COALESCE(sum("cost_nanos"), 0)::numeric / 1000000000, 9) AS "cost"',
        'max("currency") AS "currency"',
    ]
    select += ['count(*)::bigint AS "rows"', 'bool_and(finalized_at IS NOT NULL) AS "final"']
    lines = ["SELECT " + ",\n       ".join(select), f"FROM {source_table(q)}"]
    if where:
        lines.append("WHERE " + "\n  AND ".join(where))
    group = ", ".join(f'"{c}"' for c in columns)
    if columns:
        lines += [f"GROUP BY {group}", f"ORDER BY {group}"]
    else:
        lines.append("HAVING count(*) > 0")  # a grand total of nothing is no row, not zeros
    return "\n".join(lines), params


async def fetch_totals(
    conn_or_dsn: str | asyncpg.Connection | asyncpg.Pool, q: TotalsQuery
) -> list[dict[str, Any]]:
    """Run the query; a DSN opens (and closes) its own connection, a connection is reused."""
    sql, params = build_totals_sql(q)
    if not isinstance(conn_or_dsn, str):
        return [dict(r) for r in await conn_or_dsn.fetch(sql, *params)]
    conn = await asyncpg.connect(conn_or_dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"  # exact, never through a float, never in exponent form
    return value.isoformat() if isinstance(value, date) else value


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """A JSON array of objects: dates as ISO strings, counts as integers, `final` as bool, the
    cost as a decimal string (exact; a JSON number would be read as a float)."""
    return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=2)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header row (from `columns`, so an empty result still has one); ids that a
    spreadsheet would run as formulas are neutralised (see streams.output_safety)."""
    header = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    cells = ([str(r[k]).lower() if isinstance(r[k], bool) else _plain(r[k]) for k in header] for r in rows)
    return output_safety.to_csv(header, cells)
