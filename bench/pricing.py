"""What pricing adds to a worker's CPU per charge: `settle` over the same pending charges, once
without a price book (every charge unpriced) and once with the genai-prices defaults, in this
process. The figures are microseconds per charge; the sink's own cost of the model table is in
the component measurement of the sink, whose database has the default book.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from streams.ops.price_defaults import default_prices
from streams.rules.pending import PendingCharge
from streams.rules.price_book import PriceBook, Pricing
from streams.rules.settle import first_sightings, settle


@dataclass
class PricingCost:
    charges: int
    plain_seconds: float
    priced_seconds: float
    priced_share: float  # charges whose model had a price

    @property
    def plain_us(self) -> float:
        return self.plain_seconds / self.charges * 1e6

    @property
    def priced_us(self) -> float:
        return self.priced_seconds / self.charges * 1e6


def pricing_cost(charges: list[PendingCharge], rounds: int = 3) -> PricingCost:
    """Best of `rounds` for each, so a busy machine's pauses count as little as possible."""
    sources = {c.partition: c.partition for c in charges}
    winners = first_sightings(charges, sources)
    book = PriceBook(default_prices())
    plain = priced = float("inf")
    unpriced = 0
    for _ in range(rounds):
        began = time.perf_counter()
        settle(charges, sources, winners, {})
        plain = min(plain, time.perf_counter() - began)
        pricing = Pricing(book)  # a fresh per-day cache each round: the worker's first flush of a day
        began = time.perf_counter()
        settle(charges, sources, winners, {}, pricing)
        priced = min(priced, time.perf_counter() - began)
        unpriced = sum(pricing.unpriced.values())
    return PricingCost(len(charges), plain, priced, 1 - unpriced / max(1, len(charges)))
