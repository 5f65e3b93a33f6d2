"""The default prices as operator jobs: seeding an empty book, and what an import adds.

`billing migrate` seeds an empty book with the genai-prices defaults; `billing prices import
--defaults` brings a newer snapshot in without rewriting what past charges cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from streams.rules.price_book import PriceBook
from streams.rules.pricing import Price
from streams.sink.prices import FIELDS, write_prices


def defaults_to_add(book: PriceBook, defaults: Sequence[Price], now: datetime) -> list[Price]:
    """The default prices an import adds to `book`, so that no past cost changes by itself.

    A model the book has no default for gets all its prices as they are. For a model it has,
    a dated change after the book's latest default price is added; when the rate the defaults
    put in force now differs from the book's, it is added from `now` on, not back-dated:
    correcting the past is an operator's decision (`billing prices set --valid-from`, then
    `billing reprice`).
    """
    latest: dict[tuple[str, str], datetime] = {}
    for p in book.prices():
        if p.account_id is None:
            key = (p.provider, p.model)
            latest[key] = max(latest.get(key, p.valid_from), p.valid_from)
    defaults_book = PriceBook(defaults)
    out: list[Price] = []
    for p in defaults:
        known = latest.get((p.provider, p.model))
        if known is None or p.valid_from > known:
            out.append(p)
        elif defaults_book.price_at("", p.provider, p.model, now) == p:  # the default in force now
            current = book.price_at("", p.provider, p.model, now)
            if current is not None and _rates(current) != _rates(p):
                out.append(replace(p, valid_from=now))
    return out


def _rates(p: Price) -> tuple[object, ...]:
    return (*(getattr(p, f) for f in FIELDS), p.currency)


async def seed_defaults(conn: asyncpg.Connection) -> int:
    """Give an empty price book the bundled defaults (what `billing migrate` does); 0 otherwise."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM billing_prices)"):
        return 0
    from streams.ops.price_defaults import default_prices

    return await write_prices(conn, default_prices(), "genai-prices")
