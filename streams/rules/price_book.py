"""The price book: which price is in force for a charge, by account, provider, model and time.

Prices are effective-dated: each has a `valid_from`, and the one in force at a charge's
`occurred_at` is the latest that started at or before it. An account's own price (negotiated,
or a correction) wins over the default for every account while it is in force; before the
account's first own price the default applies. A model without any price in force is unpriced:
its charges still count as tokens and are counted in `unpriced_charge_count`.

Pure (the book is loaded from Postgres by `streams.sink.prices`) and cheap per charge: for each
(account, provider, model) the book keeps the span between two price changes that the last
charge fell in, so a charge costs a dictionary lookup and two comparisons while its charges stay
in that span (prices change rarely; charges of one day nearly always share one span).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime

from streams.rules.pending import PendingCharge
from streams.rules.pricing import Price, cost_nanos, normalize_model

Timeline = tuple[tuple[datetime, ...], tuple[Price, ...]]  # starts ascending, price from each start
Span = tuple[datetime, datetime, Price | None]  # [from, until): one price in force (None: unpriced)
_Key = tuple[str | None, str, str]  # account (None: every account), provider, model
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class PriceBook:
    """Every price, indexed for lookups by account, provider, model and time."""

    def __init__(self, prices: Iterable[Price] = (), span_cache_size: int = 100_000) -> None:
        grouped: dict[_Key, list[Price]] = {}
        for p in prices:
            grouped.setdefault((p.account_id, p.provider, normalize_model(p.model)), []).append(p)
        self._timelines: dict[_Key, Timeline] = {}
        for key, found in grouped.items():
            found.sort(key=lambda p: p.valid_from)
            self._timelines[key] = (tuple(p.valid_from for p in found), tuple(found))
        # A worker keeps one book for as long as no price changes: the span cache starts over
        # when full, so it holds the keys being counted, not every key since the book was loaded.
        self._spans: dict[tuple[str, str, str], Span] = {}
        self._span_cache_size = span_cache_size
        self.currencies = frozenset(p.currency for ps in grouped.values() for p in ps)

    def __len__(self) -> int:
        return sum(len(t[1]) for t in self._timelines.values())

    def prices(self) -> list[Price]:
        """Every price, by provider, model, account and start."""
        out = [p for t in self._timelines.values() for p in t[1]]
        out.sort(key=lambda p: (p.provider, normalize_model(p.model), p.account_id or "", p.valid_from))
        return out

    def _latest(self, key: _Key, at: datetime) -> Price | None:
        timeline = self._timelines.get(key)
        if timeline is None:
            return None
        i = bisect.bisect_right(timeline[0], at) - 1
        return timeline[1][i] if i >= 0 else None

    def price_at(self, account_id: str, provider: str, model: str | None, at: datetime) -> Price | None:
        """The price in force at `at`: the account's own, else the default; None when unpriced."""
        name = normalize_model(model)
        own = self._latest((account_id, provider, name), at)
        return own if own is not None else self._latest((None, provider, name), at)

    def _span(self, account_id: str, provider: str, model: str, at: datetime) -> Span:
        """The span around `at` in which the price in force stays the same: from the last change
        (of the account's own prices or the default ones) at or before `at` to the next."""
        since, until = _EARLIEST, _LATEST
        for owner in (account_id, None):
            timeline = self._timelines.get((owner, provider, model))
            if timeline is not None:
                starts = timeline[0]
                i = bisect.bisect_right(starts, at)
                if i > 0:
                    since = max(since, starts[i - 1])
                if i < len(starts):
                    until = min(until, starts[i])
        return since, until, self.price_at(account_id, provider, model, at)

    def lookup(self, account_id: str, provider: str, model: str | None, at: datetime) -> Price | None:
        """`price_at`, through the span cache."""
        return self.lookup_normalized(account_id, provider, normalize_model(model), at)

    def lookup_normalized(self, account_id: str, provider: str, name: str, at: datetime) -> Price | None:
        """`lookup` of a model name already normalized (what the sink calls once per charge)."""
        key = (account_id, provider, name)
        span = self._spans.get(key)
        if span is None or not span[0] <= at < span[1]:
            if len(self._spans) >= self._span_cache_size:
                self._spans.clear()
            span = self._spans[key] = self._span(account_id, provider, name, at)
        return span[2]


class Pricing:
    """Prices the charges of one flush with a book, and remembers which models had no price
    (by provider and model, for the metrics that name them)."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self._spans = book._spans  # the book's own span cache, read on its behalf
        self.unpriced: dict[tuple[str, str], int] = {}

    def __call__(self, c: PendingCharge) -> tuple[int, str] | None:
        # A pending charge's model is normalized when it is decoded: one lookup, no renaming. The
        # span cache's hit is inlined (`lookup_normalized` does the rest): this runs per charge.
        at = c.occurred_at
        if at is None:
            price = None
        else:
            span = self._spans.get((c.account_id, c.provider, c.model))
            if span is not None and span[0] <= at < span[1]:
                price = span[2]
            else:
                price = self.book.lookup_normalized(c.account_id, c.provider, c.model, at)
        if price is None:
            key = (c.provider, c.model)
            self.unpriced[key] = self.unpriced.get(key, 0) + 1
            return None
        return cost_nanos(c, price), price.currency
