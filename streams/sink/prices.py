"""The price book in Postgres (`billing_prices`): read by workers, written by `billing prices`.

Why in Postgres and not in the package: the prices a cost was computed with must be the same
for every worker, visible to an operator and still there for a rebuild; an account's negotiated
price is data, not code. Workers keep the book in memory and reload it only when the book's
version (bumped by a trigger on every change) moves: one tiny read per flush.

One book, one currency: a price in another currency than those already in the book is refused,
so a daily row's cost never adds two currencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from streams.errors import PriceError
from streams.rules.price_book import PriceBook
from streams.rules.pricing import Price, normalize_model

FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")
READ_VERSION = "SELECT version FROM billing_price_book"
READ_PRICES = """
SELECT provider, model, account_id, valid_from, input, output, cache_read, cache_write, reasoning, currency
FROM billing_prices
"""
# Writers of the book take turns, so the one-currency rule holds under concurrent imports.
LOCK_BOOK = "LOCK TABLE billing_prices IN SHARE ROW EXCLUSIVE MODE"
CURRENCIES = "SELECT DISTINCT currency FROM billing_prices"
# A price set again for the same start replaces the old one; an identical one changes nothing.
UPSERT_PRICES = """
INSERT INTO billing_prices AS p
    (provider, model, account_id, valid_from, input, output, cache_read, cache_write, reasoning, currency, source)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::numeric[], $6::numeric[],
                     $7::numeric[], $8::numeric[], $9::numeric[], $10::text[], $11::text[])
ON CONFLICT (provider, model, coalesce(account_id, ''), valid_from) DO UPDATE SET
    input = EXCLUDED.input, output = EXCLUDED.output, cache_read = EXCLUDED.cache_read,
    cache_write = EXCLUDED.cache_write, reasoning = EXCLUDED.reasoning, currency = EXCLUDED.currency,
    source = EXCLUDED.source, updated_at = now()
WHERE (p.input, p.output, p.cache_read, p.cache_write, p.reasoning, p.currency)
      IS DISTINCT FROM (EXCLUDED.input, EXCLUDED.output, EXCLUDED.cache_read, EXCLUDED.cache_write,
                        EXCLUDED.reasoning, EXCLUDED.currency)
RETURNING 1
"""


def _price(row: asyncpg.Record) -> Price:
    rates = {f: row[f] for f in FIELDS}
    return Price(
        row["provider"],
        row["model"],
        row["valid_from"],
        currency=row["currency"],
        account_id=row["account_id"],
        **rates,
    )


async def load_book(conn: asyncpg.Connection) -> PriceBook:
    """Every price in the database."""
    return PriceBook(_price(r) for r in await conn.fetch(READ_PRICES))


async def write_prices(conn: asyncpg.Connection, prices: Sequence[Price], source: str = "set") -> int:
    """Add or replace prices in one transaction; returns how many rows changed."""
    if not prices:
        return 0
    async with conn.transaction():
        await conn.execute(LOCK_BOOK)
        currencies = {r[0] for r in await conn.fetch(CURRENCIES)} | {p.currency for p in prices}
        if len(currencies) > 1:
            raise PriceError(
                f"one price book has one currency; these prices would mix {', '.join(sorted(currencies))}"
            )
        columns: list[list[object]] = [[] for _ in range(11)]
        for p in prices:
            values = (p.provider, normalize_model(p.model), p.account_id, p.valid_from)
            row = (*values, *(getattr(p, f) for f in FIELDS), p.currency, source)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        return len(await conn.fetch(UPSERT_PRICES, *columns))


@dataclass(slots=True)
class PriceCache:
    """The book as a worker holds it: reloaded when its version moves, shared by a sink's lanes."""

    version: int | None = None
    book: PriceBook = field(default_factory=PriceBook)

    async def current(self, conn: asyncpg.Connection) -> PriceBook:
        version = await conn.fetchval(READ_VERSION)
        if version != self.version:
            self.book, self.version = await load_book(conn), version
        return self.book
