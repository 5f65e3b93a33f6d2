"""`billing totals`: daily totals and their cost, read from `daily_billing_records` (or, to
split or filter by model, from `daily_model_records`, which holds the same sums by model).

The query builder is pure so the SQL can be tested without a database. Values only ever travel
as bound parameters ($1, $2, ...); column names come from the fixed `GROUP_COLUMNS` whitelist,
never from user text, so no option value can change the shape of the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import asyncpg
import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from streams import errors, output_safety
from streams.cli_common import load_settings

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
    [f"{kind}_tokens" for kind in ("prompt", "completion", "total", "cached", "reasoning")]
    + ["charge_count", "late_charge_count"]
)
#: Money, after the counts: charges without a price, the exact cost and its currency.
MONEY: tuple[str, ...] = ("unpriced_charge_count", "cost", "currency")
_COUNTS: tuple[str, ...] = (*METRICS, "unpriced_charge_count", "rows")
_FILTERS: tuple[str, ...] = ("account", "user", "provider", "charge_type", "model")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_HEADERS = {k: k.removesuffix("_tokens").removesuffix("_count") for k in _COUNTS}
#: Rows a table shows unless --limit says otherwise: a screenful or two, not thousands of lines.
TABLE_LIMIT = 100


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
    date_from: date | None = None
    date_to: date | None = None
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    final_only: bool = False

    def __post_init__(self) -> None:
        # Accept a single string or any iterable, store tuples: the query stays hashable.
        for name in (*_FILTERS, "group_by"):
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


def render_table(rows: Sequence[Mapping[str, Any]], console: Console, limit: int = 0) -> None:
    """Print a human table: thousands separators, a totals footer, provisional rows marked.

    Wider than the console, it is printed at natural width: squeezing shows `1,23…` for an amount.
    Stored ids are shown as literal text (no markup, controls escaped). With `limit`, only the
    first rows are listed, but the footer still sums all of them and the caption says so.
    """
    if not rows:
        console.print("No billing records match.")
        return
    groups = [k for k in rows[0] if k not in (*_COUNTS, *MONEY, "final")]
    sums = {k: sum(int(r[k]) for r in rows) for k in _COUNTS}
    cost = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
    currency = next((r["currency"] for r in rows if r["currency"]), "")
    all_final = all(r["final"] for r in rows)
    caption = "provisional = the day is still open; sums may grow"
    if 0 < limit < len(rows):
        caption = f"first {limit:,} of {len(rows):,} rows (--limit 0 shows all); TOTAL sums all; " + caption
        rows = rows[:limit]
    table = Table(show_footer=True, caption=caption)
    for i, key in enumerate(groups or ["scope"]):
        table.add_column(key, footer="TOTAL" if i == 0 else "", no_wrap=True)
    for key in _COUNTS:
        table.add_column(_HEADERS[key], footer=f"{sums[key]:,}", justify="right", no_wrap=True)
    table.add_column(f"cost {currency}".strip(), footer=money(cost), justify="right", no_wrap=True)
    table.add_column("status", footer="final" if all_final else "provisional", no_wrap=True)
    for r in rows:
        cells: list[Any] = [output_safety.plain(r[k]) for k in groups] if groups else ["all"]
        cells += [f"{int(r[k]):,}" for k in _COUNTS]
        cells.append(money(Decimal(r["cost"])))
        cells.append("final" if r["final"] else "[yellow]provisional[/]")
        table.add_row(*cells)
    width = console.width
    console.width = max(width, Measurement.get(console, console.options.update_width(9999), table).maximum)
    try:
        console.print(table)
    finally:
        console.width = width


def money(amount: Decimal) -> str:
    """An amount for people: thousands separated, cents always, sub-cent digits only when there
    are any (a table rounds nothing away: 0.000123 stays 0.000123)."""
    text = f"{amount:,.9f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


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


_InputError = errors.UsageFailure


def _parse_day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    if _DAY.fullmatch(value):
        with contextlib.suppress(ValueError):  # e.g. 2026-02-30
            return date.fromisoformat(value)
    raise _InputError(f"{param.opts[0]}: {value!r} is not a date; use YYYY-MM-DD")


async def _run(dsn: str, q: TotalsQuery) -> list[dict[str, Any]]:
    conn = await errors.connect(dsn)
    try:
        return await fetch_totals(conn, q)
    except asyncpg.PostgresError as e:
        raise errors.postgres_failure(e, dsn) from e
    finally:
        await conn.close()


_BY = f"Comma-separated columns to total by: {', '.join(GROUP_COLUMNS)}."
_EPILOG = """\b
Examples:
  billing totals --from 2026-11-01 --to 2026-11-30
  billing totals --account acme --group-by date,provider
  billing totals --provider openai --provider anthropic --format csv > nov.csv
  billing totals --group-by account --final-only --format json
  billing totals --group-by account,model --from 2026-11-01    cost by model
  billing totals --limit 0                       every row (a table shows 100 by default)

Rows of days still open are marked provisional: their sums may still grow. The cost is exact
(summed in whole nano-units); `unpriced` counts charges whose model had no price.
Connection: BILLING_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/billing).
"""


@click.command("totals", epilog=_EPILOG)
@click.option("--account", multiple=True, metavar="ID", help="Only this account (repeatable).")
@click.option("--user", multiple=True, metavar="ID", help="Only this user (repeatable).")
@click.option("--provider", multiple=True, metavar="SLUG", help="Only this provider (repeatable).")
@click.option("--charge-type", multiple=True, metavar="TYPE", help="Only this type (repeatable).")
@click.option("--model", multiple=True, metavar="NAME", help="Only this model, lower-case (repeatable).")
@click.option("--from", "date_from", callback=_parse_day, metavar="YYYY-MM-DD", help="First day, inclusive.")
@click.option("--to", "date_to", callback=_parse_day, metavar="YYYY-MM-DD", help="Last day, inclusive.")
@click.option("--group-by", default=",".join(DEFAULT_GROUP_BY), show_default=True, metavar="NAMES", help=_BY)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option("--final-only", is_flag=True, help="Count only finalized (closed) days.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help=f"At most N rows; 0 = all [default: {TABLE_LIMIT} for table, all for json and csv].",
)
def totals(group_by: str, fmt: str, limit: int | None, **filters: Any) -> None:
    """Daily billing totals from Postgres, summed per group."""
    try:
        q = TotalsQuery(group_by=parse_group_by(group_by), **filters)  # options named like fields
        build_totals_sql(q)  # validates group-by names and dates before touching the network
    except ValueError as e:
        raise _InputError(str(e)) from None
    rows = asyncio.run(_run(load_settings().dsn, q))
    limit = (TABLE_LIMIT if fmt == "table" else 0) if limit is None else limit
    if fmt == "table":
        render_table(rows, output_safety.console(), limit)
        return
    shown = rows[:limit] if limit else rows
    if fmt == "json":
        output_safety.echo_data(to_json(shown))
    else:
        output_safety.echo_data(to_csv(shown, output_columns(q)), nl=False)
    if len(shown) < len(rows):
        click.echo(f"showing {len(shown):,} of {len(rows):,} rows (--limit 0 shows all)", err=True)
