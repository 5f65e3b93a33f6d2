"""One price book, one currency: a daily row sums whole nano-units of its charges' costs, so a
price in a second currency would add euros to dollars. The book refuses it and keeps what it had."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from streams.errors import PriceError
from streams.ops.totals import TotalsQuery, fetch_totals
from streams.rules.pricing import Price
from streams.sink.prices import write_prices

START = datetime(2026, 11, 1, tzinfo=UTC)


def price(model: str, currency: str, account: str | None = None) -> Price:
    return Price(
        provider="acme-ai",
        model=model,
        valid_from=START,
        input=Decimal("1.25"),
        output=Decimal("5"),
        currency=currency,
        account_id=account,
    )


async def test_a_price_in_a_second_currency_is_refused_and_nothing_is_written(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("DELETE FROM billing_prices")  # the bundled defaults are in USD
        assert await write_prices(conn, [price("m1", "EUR")]) == 1  # an empty book takes any currency
        with pytest.raises(PriceError, match="one currency"):
            await write_prices(conn, [price("m2", "USD", account="acme")])
        with pytest.raises(PriceError, match="one currency"):  # mixed within one import, too
            await write_prices(conn, [price("m3", "EUR"), price("m4", "USD")])
        rows = await conn.fetch("SELECT model, currency FROM billing_prices ORDER BY model")
    finally:
        await conn.close()
    assert [(r["model"], r["currency"]) for r in rows] == [("m1", "EUR")]


async def test_totals_filter_rows_by_currency(database: str) -> None:
    """`billing totals --currency USD` keeps the priced rows of that currency, not unpriced ones."""
    conn = await asyncpg.connect(database)
    try:
        await conn.executemany(
            "INSERT INTO daily_billing_records (account_id, user_id, provider, date, charge_type,"
            " charge_count, cost_nanos, currency, unpriced_charge_count)"
            " VALUES ($1, 'u', 'openai', '2026-11-30', 'completion', $2, $3, $4, $5)",
            [("priced", 3, 4_500_000_000, "USD", 0), ("unpriced", 2, 0, None, 2)],
        )
        kept = await fetch_totals(conn, TotalsQuery(currency="usd", group_by=("account",)))
        every = await fetch_totals(conn, TotalsQuery(group_by=("account",)))
    finally:
        await conn.close()
    assert [(r["account_id"], r["cost"], r["currency"]) for r in kept] == [("priced", Decimal("4.5"), "USD")]
    assert sorted(r["account_id"] for r in every) == ["priced", "unpriced"]
