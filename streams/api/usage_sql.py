"""The SQL of the read API, built as pure functions so it can be tested without a database.

As in `streams.ops.totals`: values travel only as bound `$n` parameters, and column names and
window expressions come from fixed whitelists (never from request text).

Windows are computed on the `date` column, which already holds the billing date in
BILLING_TIMEZONE; so weeks (ISO, Monday first) and months are calendar weeks and months of
that zone, whatever the server's or the client's zone.

The change feed pages by (updated_at, id): updated_at is the writing transaction's start time,
so a transaction still open may yet commit rows older than rows already visible. The feed
therefore stops short of the oldest transaction still open in this database (as far as
pg_stat_activity shows it to our role; a superuser or the workers' own role sees them all), so
that a cursor once passed is never overtaken by a late commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Literal

from streams.ops.totals import GROUP_COLUMNS, METRICS

Window = Literal["day", "week", "month"]
#: group_by names of the usage API (the window stands for the date).
DIMENSIONS: tuple[str, ...] = ("account", "user", "provider", "charge_type")
WINDOW_START: Mapping[str, str] = MappingProxyType(
    {
        "day": '"date"',
        "week": "date_trunc('week', \"date\")::date",
        "month": "date_trunc('month', \"date\")::date",
    }
)
CHANGE_COLUMNS: tuple[str, ...] = (
    "id",
    *(GROUP_COLUMNS[d] for d in DIMENSIONS),
    "date",
    *METRICS,
    "revision",
    "finalized_at",
    "updated_at",
)
HORIZON_SQL = """
SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND xact_start IS NOT NULL))
"""


@dataclass(frozen=True)
class UsageQuery:
    """One page of windowed usage; `filters` maps a dimension to the values it may take."""

    date_from: date
    date_to: date
    window: Window = "day"
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def bind(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def _filters(p: _Params, filters: Mapping[str, Sequence[str]]) -> list[str]:
    where = []
    for name in DIMENSIONS:
        values = filters.get(name)
        if values:
            where.append(f'"{GROUP_COLUMNS[name]}" = ANY({p.bind(list(values), "text[]")})')
    return where


def build_usage_sql(q: UsageQuery) -> tuple[str, list[Any]]:
    """`(sql, params)`: one row per window and group, `limit + 1` rows to tell if more follow."""
    unknown = [g for g in q.group_by if g not in DIMENSIONS]
    if unknown or len(set(q.group_by)) != len(q.group_by):
        raise ValueError(f"group_by takes distinct names among {', '.join(DIMENSIONS)}")
    p = _Params()
    columns = [f'"{GROUP_COLUMNS[g]}"' for g in q.group_by]
    where = [f'"date" >= {p.bind(q.date_from, "date")}', f'"date" <= {p.bind(q.date_to, "date")}']
    where += _filters(p, q.filters)
    select = [f"{WINDOW_START[q.window]} AS window_start", *columns]
    select += [f'COALESCE(sum("{m}"), 0)::bigint AS "{m}"' for m in METRICS]
    order = ", ".join(["window_start", *columns])
    sql = (
        "SELECT "
        + ", ".join(select)
        + "\nFROM daily_billing_records\nWHERE "
        + "\n  AND ".join(where)
        + f"\nGROUP BY {order}\nORDER BY {order}"
        + f"\nLIMIT {p.bind(q.limit + 1, 'bigint')} OFFSET {p.bind(q.offset, 'bigint')}"
    )
    return sql, p.values


def build_changes_sql(
    after: tuple[datetime, int] | None,
    horizon: datetime,
    filters: Mapping[str, Sequence[str]],
    limit: int,
) -> tuple[str, list[Any]]:
    """Rows written after the cursor and before the horizon, in (updated_at, id) order."""
    p = _Params()
    where = [f"updated_at < {p.bind(horizon, 'timestamptz')}"]
    if after is not None:
        where.append(f"(updated_at, id) > ({p.bind(after[0], 'timestamptz')}, {p.bind(after[1], 'bigint')})")
    where += _filters(p, filters)
    sql = (
        "SELECT "
        + ", ".join(f'"{c}"' for c in CHANGE_COLUMNS)
        + "\nFROM daily_billing_records\nWHERE "
        + "\n  AND ".join(where)
        + f"\nORDER BY updated_at, id\nLIMIT {p.bind(limit + 1, 'bigint')}"
    )
    return sql, p.values
