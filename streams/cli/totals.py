"""`billing totals`: daily totals and their cost as a table, JSON or CSV."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from streams.cli import errors, terminal
from streams.cli.common import load_settings
from streams.ops.totals import (
    COUNTS,
    DEFAULT_GROUP_BY,
    GROUP_COLUMNS,
    MONEY,
    TotalsQuery,
    build_totals_sql,
    fetch_totals,
    output_columns,
    parse_group_by,
    to_csv,
    to_json,
)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_HEADERS = {k: k.removesuffix("_tokens").removesuffix("_count") for k in COUNTS}
#: Rows a table shows unless --limit says otherwise: a screenful or two, not thousands of lines.
TABLE_LIMIT = 100


def render_table(rows: Sequence[Mapping[str, Any]], console: Console, limit: int = 0) -> None:
    """Print a human table: thousands separators, a totals footer, provisional rows marked.

    Wider than the console, it is printed at natural width: squeezing shows `1,23…` for an amount.
    Stored ids are shown as literal text (no markup, controls escaped). With `limit`, only the
    first rows are listed, but the footer still sums all of them and the caption says so.
    """
    if not rows:
        console.print("No billing records match.")
        return
    groups = [k for k in rows[0] if k not in (*COUNTS, *MONEY, "final")]
    sums = {k: sum(int(r[k]) for r in rows) for k in COUNTS}
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
    for key in COUNTS:
        table.add_column(_HEADERS[key], footer=f"{sums[key]:,}", justify="right", no_wrap=True)
    table.add_column(f"cost {currency}".strip(), footer=money(cost), justify="right", no_wrap=True)
    table.add_column("status", footer="final" if all_final else "provisional", no_wrap=True)
    for r in rows:
        cells: list[Any] = [terminal.plain(r[k]) for k in groups] if groups else ["all"]
        cells += [f"{int(r[k]):,}" for k in COUNTS]
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
@click.option(
    "--currency",
    multiple=True,
    metavar="CODE",
    help="Only rows priced in this currency, e.g. USD (repeatable).",
)
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
    settings = load_settings()
    rows = errors.run(_run(settings.dsn, q), settings, network="postgres")
    limit = (TABLE_LIMIT if fmt == "table" else 0) if limit is None else limit
    if fmt == "table":
        render_table(rows, terminal.console(), limit)
        return
    shown = rows[:limit] if limit else rows
    if fmt == "json":
        terminal.echo_data(to_json(shown))
    else:
        terminal.echo_data(to_csv(shown, output_columns(q)), nl=False)
    if len(shown) < len(rows):
        click.echo(f"showing {len(shown):,} of {len(rows):,} rows (--limit 0 shows all)", err=True)
