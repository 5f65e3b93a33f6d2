"""`billing prices`: the price book in Postgres — list, show, set, import.

Prices are per million tokens, in the book's one currency, each in force from `valid_from` on;
an `--account` price is that account's own (negotiated or corrected) and wins over the default
while in force. A change applies to charges the workers count from then on; recompute days
counted before with `billing reprice --from D1 --to D2`.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from rich.table import Table

from streams.cli import errors, terminal
from streams.cli.common import load_settings
from streams.errors import PriceError
from streams.ops.prices import defaults_to_add
from streams.rules.price_book import PriceBook
from streams.rules.pricing import Price, normalize_model
from streams.sink.prices import load_book, write_prices

T = TypeVar("T")
RATES = ("input", "output", "cache_read", "cache_write", "reasoning")
FILE_COLUMNS = ("provider", "model", "account_id", "valid_from", *RATES, "currency")


def _run(operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    dsn = load_settings().dsn

    async def go() -> T:
        conn = await errors.connect(dsn)
        try:
            return await operation(conn)
        except PriceError as e:
            raise errors.UsageFailure(str(e)) from None
        except asyncpg.PostgresError as e:
            raise errors.postgres_failure(e, dsn) from e
        finally:
            await conn.close()

    return asyncio.run(go())


def _moment(text: str | None, what: str) -> datetime:
    """An ISO time (a date means its UTC midnight); naive times are UTC."""
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise errors.UsageFailure(
            f"{what}: {text!r} is not a time; use e.g. 2026-12-01 or 2026-12-01T12:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rate(text: Any, what: str) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        return Decimal(str(text).strip())
    except InvalidOperation:
        raise errors.UsageFailure(f"{what}: {text!r} is not a decimal number") from None


def _render(prices: Sequence[Price], title: str) -> None:
    if not prices:
        terminal.console().print("No prices match.")
        return
    table = Table(
        title=title, caption="per million tokens; empty: cache reads and writes at input, reasoning at output"
    )
    for name in ("provider", "model", "account", "valid_from", *RATES, "currency"):
        table.add_column(name, no_wrap=True, justify="right" if name in RATES else "left")
    for p in prices:
        rates = ["" if getattr(p, r) is None else str(getattr(p, r)) for r in RATES]
        cells = [p.provider, p.model, p.account_id or "(default)", f"{p.valid_from:%Y-%m-%d %H:%M}Z"]
        table.add_row(*map(terminal.plain, cells), *rates, p.currency)
    terminal.console().print(table)


def _in_force(book: PriceBook, at: datetime, account: str | None) -> list[Price]:
    seen = {(p.provider, p.model) for p in book.prices()}
    found = (book.price_at(account or "", provider, model, at) for provider, model in sorted(seen))
    return [p for p in found if p is not None]


@click.group("prices")
def prices() -> None:
    """The price book: per provider and model, per million tokens, dated, per account."""


@prices.command("list")
@click.option("--provider", help="Only this provider.")
@click.option("--model", help="Only models whose name contains this text.")
@click.option("--account", metavar="ID", help="As this account pays (its own prices win).")
@click.option("--at", "at_text", metavar="TIME", help="In force at this time [default: now].")
def list_prices(provider: str | None, model: str | None, account: str | None, at_text: str | None) -> None:
    """The price in force per provider and model."""
    at = _moment(at_text, "--at")
    book = _run(load_book)
    shown = [
        p
        for p in _in_force(book, at, account)
        if (provider is None or p.provider == provider)
        and (model is None or normalize_model(model) in p.model)
    ]
    _render(shown, f"prices in force at {at:%Y-%m-%d %H:%M}Z" + (f" for {account}" if account else ""))


@prices.command("show")
@click.option("--model", required=True, help="The model, as charges name it.")
@click.option("--provider", help="Only this provider.")
def show(model: str, provider: str | None) -> None:
    """Every price of one model: defaults and account prices, with their start."""
    name = normalize_model(model)
    found = [p for p in _run(load_book).prices() if p.model == name and provider in (None, p.provider)]
    _render(found, f"prices of {name}")


@prices.command("set")
@click.option("--provider", required=True)
@click.option("--model", required=True)
@click.option("--input", "input_", required=True, metavar="RATE", help="Per million input tokens.")
@click.option("--output", required=True, metavar="RATE", help="Per million output tokens.")
@click.option("--cache-read", metavar="RATE", help="Per million cached input tokens read.")
@click.option("--cache-write", metavar="RATE", help="Per million tokens written to a cache.")
@click.option("--reasoning", metavar="RATE", help="Per million reasoning output tokens.")
@click.option("--account", metavar="ID", help="This account's own price (default: every account).")
@click.option("--valid-from", metavar="TIME", help="In force from [default: now].")
@click.option("--currency", default="USD", show_default=True)
def set_price(
    provider: str, model: str, account: str | None, valid_from: str | None, currency: str, **rates: str | None
) -> None:
    """Add a price (or replace the one with the same start)."""
    values = {k.rstrip("_"): _rate(v, f"--{k.rstrip('_').replace('_', '-')}") for k, v in rates.items()}
    price = _price(provider, model, account, _moment(valid_from, "--valid-from"), values, currency)
    changed = _run(lambda conn: write_prices(conn, [price]))
    who = account or "every account"
    click.echo(
        f"{'set' if changed else 'unchanged'}: {price.provider} {price.model} for {who} from {price.valid_from:%Y-%m-%d %H:%M}Z"
    )


def _price(
    provider: str, model: str, account: str | None, valid_from: datetime, rates: dict[str, Any], currency: str
) -> Price:
    try:
        return Price(
            provider.strip().lower(),
            normalize_model(model),
            valid_from,
            account_id=account or None,
            currency=currency.strip().upper(),
            **rates,
        )
    except (PriceError, TypeError) as e:
        raise errors.UsageFailure(str(e)) from None


def read_price_file(path: Path) -> list[Price]:
    """Prices from CSV (a header with FILE_COLUMNS; rates may be empty) or a JSON array of objects."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        rows = json.loads(text, parse_float=Decimal)
        if not isinstance(rows, list):
            raise errors.UsageFailure(f"{path}: a JSON array of price objects is expected")
    else:
        rows = list(csv.DictReader(text.splitlines()))
    out = []
    for n, row in enumerate(rows, 1):
        unknown = set(row) - set(FILE_COLUMNS)
        if unknown or not row.get("provider") or not row.get("model"):
            raise errors.UsageFailure(
                f"{path}: entry {n}: needs provider and model; unknown: {sorted(unknown)}"
            )
        rates = {r: _rate(row.get(r), f"{path}: entry {n}: {r}") for r in RATES}
        when = _moment(str(row.get("valid_from") or ""), f"{path}: entry {n}: valid_from")
        out.append(
            _price(
                row["provider"],
                row["model"],
                row.get("account_id"),
                when,
                rates,
                row.get("currency") or "USD",
            )
        )
    return out


@prices.command("import")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--defaults", is_flag=True, help="The default prices bundled with genai-prices.")
def import_prices(file: Path | None, defaults: bool) -> None:
    """Add prices from FILE (CSV or JSON; columns as `billing prices list`), or the defaults."""
    if (file is None) == (not defaults):
        raise errors.UsageFailure("give a FILE or --defaults (not both)")
    if defaults:
        from streams.ops.price_defaults import default_prices

        bundled = default_prices()

        async def go(conn: asyncpg.Connection) -> int:
            return await write_prices(
                conn, defaults_to_add(await load_book(conn), bundled, datetime.now(UTC)), "genai-prices"
            )

        changed = _run(go)
    else:
        assert file is not None
        loaded = read_price_file(file)
        changed = _run(lambda conn: write_prices(conn, loaded, "import"))
    click.echo(f"{changed:,} prices added or changed")
