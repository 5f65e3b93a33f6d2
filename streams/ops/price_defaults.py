"""Default prices from `genai-prices`, the pydantic team's maintained price data, as our book.

The package ships a snapshot of every provider's list prices and needs no network; its `Decimal`
prices per million tokens become `Price` rows for every account (`account_id` None), imported
into Postgres by `billing prices import --defaults`, so that the prices a worker uses are the
ones in the database, visible and reproducible, not whatever package version is installed.

What is kept: input, output, cache-read, cache-write and reasoning-output rates per million
tokens, each dated price change (`StartDateConstraint`) as its own `valid_from`. What cannot be
represented by a per-token rate is reduced, and said so here: tiered prices (a higher rate for
all tokens of a long prompt) keep their base rate; time-of-day discounts keep the standard rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from streams.rules.pricing import Price, normalize_model

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)  # before any priced model: "always"
#: Our provider slugs that mean a genai-prices provider (synthetic data and common spellings).
PROVIDER_ALIASES: Mapping[str, tuple[str, ...]] = {"google": ("googleai", "gemini")}
_RATES = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
}


def _rate(model_price: Any, name: str) -> Decimal | None:
    value = model_price.__dict__.get(name)
    if value is None:
        return None
    base = getattr(value, "base", value)  # TieredPrices: the base rate
    return base if isinstance(base, Decimal) else None


def _dated(prices: Any) -> Iterator[tuple[datetime, Any]]:
    """(valid_from, ModelPrice) of a model: one price, or its dated changes in order."""
    if not isinstance(prices, list):
        yield EPOCH, prices
        return
    for conditional in prices:
        start = getattr(conditional.constraint, "start_date", None)
        if conditional.constraint is None:
            yield EPOCH, conditional.prices
        elif isinstance(start, date):
            yield datetime.combine(start, time(), UTC), conditional.prices


def _names(model: Any) -> list[str]:
    """The model's id and the exact names it is also called by (its `equals` match clauses)."""
    names = [model.id]
    pending = [model.match]
    while pending:
        clause = pending.pop()
        if isinstance(getattr(clause, "equals", None), str):
            names.append(clause.equals)
        pending.extend(getattr(clause, "or_", None) or ())
    return list(dict.fromkeys(normalize_model(n) for n in names))


def default_prices(providers: list[Any] | None = None) -> list[Price]:
    """The bundled snapshot (or `providers`, for tests) as prices for every account, in USD."""
    if providers is None:
        from genai_prices.data import providers as bundled

        providers = list(bundled)
    out: dict[tuple[str, str, datetime], Price] = {}
    for provider in providers:
        slugs = (provider.id.lower(), *PROVIDER_ALIASES.get(provider.id.lower(), ()))
        for model in provider.models:
            for valid_from, model_price in _dated(model.prices):
                rates = {ours: _rate(model_price, theirs) for ours, theirs in _RATES.items()}
                if rates["input"] is None or rates["output"] is None:
                    continue  # not priced per token (images, audio, searches only)
                for slug in slugs:
                    for name in _names(model):
                        price = Price(slug, name, valid_from, **rates)  # type: ignore[arg-type]
                        out.setdefault((slug, name, valid_from), price)
    return [out[k] for k in sorted(out)]
