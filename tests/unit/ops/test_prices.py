"""The genai-prices defaults as our book, what an import of them adds to a book, and price files
as `billing prices import` reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from streams.cli.errors import UsageFailure
from streams.cli.prices import read_price_file
from streams.ops.price_defaults import default_prices
from streams.ops.prices import defaults_to_add
from streams.rules.price_book import PriceBook
from streams.rules.pricing import Price

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def p(model: str, rate: str, start: datetime = EPOCH, account: str | None = None) -> Price:
    return Price("openai", model, start, Decimal(rate), Decimal(rate) * 4, account_id=account)


def test_a_first_import_takes_every_default_as_it_is() -> None:
    defaults = [p("a", "1"), p("a", "2", NOW - timedelta(days=3)), p("b", "5")]
    assert defaults_to_add(PriceBook(), defaults, NOW) == defaults


def test_a_changed_rate_applies_from_now_and_never_rewrites_the_past() -> None:
    book = PriceBook([p("a", "1"), p("b", "5"), p("a", "9", account="acme")])
    later = NOW + timedelta(days=30)
    defaults = [p("a", "1.5"), p("b", "5"), p("b", "4", later)]
    # a: its rate moved, so from now on (not back to 2020); b: unchanged, its announced cut kept.
    assert defaults_to_add(book, defaults, NOW) == [p("a", "1.5", NOW), p("b", "4", later)]
    assert (
        defaults_to_add(PriceBook([*book.prices(), p("a", "1.5", NOW), p("b", "4", later)]), defaults, NOW)
        == []
    )


def test_price_files_in_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "prices.csv"
    csv_file.write_text(
        "provider,model,account_id,valid_from,input,output,cache_read\n"
        "OpenAI,GPT-4o,,2026-01-01,2.5,10,1.25\n"
        "anthropic,claude-sonnet-4,acme,2026-02-01T12:00:00Z,2.4,12,\n"
    )
    first, second = read_price_file(csv_file)
    assert (first.provider, first.model, first.account_id, first.cache_read) == (
        "openai",
        "gpt-4o",
        None,
        Decimal("1.25"),
    )
    assert first.valid_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert (second.account_id, second.cache_read, second.input) == ("acme", None, Decimal("2.4"))
    json_file = tmp_path / "prices.json"
    json_file.write_text(
        '[{"provider": "openai", "model": "o3", "input": 0.1, "output": 0.30000000000000004}]'
    )
    [exact] = read_price_file(json_file)
    assert exact.output == Decimal("0.30000000000000004")  # read as decimal text, never as a float
    bad = tmp_path / "bad.csv"
    bad.write_text("provider,model,input,output,discount\nopenai,x,1,2,3\n")
    with pytest.raises(UsageFailure, match="discount"):
        read_price_file(bad)


def test_defaults_come_from_the_bundled_genai_prices_snapshot() -> None:
    book = PriceBook(default_prices())
    gpt = book.price_at("any", "openai", "gpt-4o", EPOCH)
    assert gpt is not None and gpt.currency == "USD" and gpt.input > 0 and gpt.cache_read is not None
    assert book.price_at("any", "anthropic", "claude-sonnet-4", EPOCH) is not None  # an alias of its id
    assert book.price_at("any", "googleai", "gemini-2.5-pro", EPOCH) is not None  # our slug for google
    assert book.price_at("any", "openai", "no-such-model", EPOCH) is None
