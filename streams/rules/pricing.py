"""What a charge costs: prices per million tokens, and an exact cost in integer nano-units.

Pure and deterministic, so the sink, `billing rebuild` and a test's independent computation
reach the same number for the same charge and price. Money is never a float: prices are
`Decimal`, the cost of one charge is computed exactly and then rounded once, half to even, to a
whole nano-unit (10^-9 of the currency); a day's cost is the integer sum of its charges' costs,
so it does not depend on how charges were batched.

Which count is inside which follows the charge's rule (docs/llm-apps.md): `cached_tokens` (cache
reads) and `cache_write_tokens` are separate parts of `prompt_tokens`, and `reasoning_tokens`
part of `completion_tokens`, so

    cost = (prompt - cached - written) x input + cached x cache_read + written x cache_write
         + (completion - reasoning) x output + reasoning x reasoning_output

per million tokens. A price without a cache-read rate charges cached reads at the input rate,
one without a cache-write rate charges cache writes at the input rate (providers that do not
charge for writing a cache), and one without a reasoning rate charges reasoning at the output
rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal, Inexact, localcontext
from typing import Protocol

from streams.errors import PriceError

NANOS_PER_UNIT = 10**9
TOKENS_PER_PRICE = 10**6  # prices are per million tokens
# Enough digits for 10^12 tokens times any price with up to 40 digits: no sum is ever rounded,
# and Inexact is trapped so that an overflow of precision would raise instead of rounding.
_EXACT = Context(prec=80, traps=[Inexact])
_ROUND = Context(prec=80, rounding="ROUND_HALF_EVEN")  # the one rounding step, not trapped
_WHOLE = Decimal(1)


class Counts(Protocol):
    """The token counts of a charge (a `schemas.charge.Charge` or a pending one)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Price:
    """One provider's price for one model from `valid_from` on, for every account
    (`account_id` None) or one account's negotiated price."""

    provider: str
    model: str
    valid_from: datetime
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    currency: str = "USD"
    account_id: str | None = None
    # The five rates a cost uses as integers over one power of ten: integer arithmetic is exact
    # and several times faster than Decimal, and the worker prices every charge.
    _scaled: tuple[int, int, int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.valid_from.tzinfo is None:
            raise PriceError("valid_from must be timezone-aware")
        if not self.currency or len(self.currency) != 3 or not self.currency.isalpha():
            raise PriceError(f"currency {self.currency!r} is not a three-letter code")
        for name in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise PriceError(f"{name} price {value!r} must be a finite, non-negative Decimal")
        rates = (self.input, self.cache_read_rate, self.cache_write_rate, self.output, self.reasoning_rate)
        places = max(0, *(-int(r.as_tuple().exponent) for r in rates))
        scaled = tuple(int(r.scaleb(places)) for r in rates)
        object.__setattr__(self, "_scaled", (*scaled, 10**places))

    @property
    def cache_write_rate(self) -> Decimal:
        """What writing a token to the cache costs per million (the input rate when none is set)."""
        return self.input if self.cache_write is None else self.cache_write

    @property
    def cache_read_rate(self) -> Decimal:
        """What a cached read costs per million tokens (the input rate when none is set)."""
        return self.input if self.cache_read is None else self.cache_read

    @property
    def reasoning_rate(self) -> Decimal:
        """What a reasoning token costs per million (the output rate when none is set)."""
        return self.output if self.reasoning is None else self.reasoning


def exact_cost(counts: Counts, price: Price) -> Decimal:
    """The cost of one charge in currency units, unrounded."""
    with localcontext(_EXACT):
        uncached = counts.prompt_tokens - counts.cached_tokens - counts.cache_write_tokens
        visible = counts.completion_tokens - counts.reasoning_tokens
        per_million = (
            uncached * price.input
            + counts.cached_tokens * price.cache_read_rate
            + counts.cache_write_tokens * price.cache_write_rate
            + visible * price.output
            + counts.reasoning_tokens * price.reasoning_rate
        )
        return per_million / TOKENS_PER_PRICE


def cost_nanos(counts: Counts, price: Price) -> int:
    """The cost of one charge in whole nano-units, rounded once, half to even.

    The same number as `exact_cost` rounded, in integers: rates x 10^places are whole, so
    nano-units x 10^places = tokens x scaled rates x 1000 (10^9 nano-units / 10^6 tokens).
    """
    i, read, write, o, think, scale = price._scaled
    cached, written, reasoning = counts.cached_tokens, counts.cache_write_tokens, counts.reasoning_tokens
    exact = (
        (counts.prompt_tokens - cached - written) * i
        + cached * read
        + written * write
        + (counts.completion_tokens - reasoning) * o
        + reasoning * think
    ) * (NANOS_PER_UNIT // TOKENS_PER_PRICE)
    whole, rest = divmod(exact, scale)
    if 2 * rest > scale or (2 * rest == scale and whole % 2):
        whole += 1
    return whole


def rounded(amount: Decimal) -> int:
    """An exact amount of currency units in whole nano-units, half to even (the reference rule)."""
    return int(amount.scaleb(9).quantize(_WHOLE, context=_ROUND))


def nanos_to_units(nanos: int) -> Decimal:
    """Nano-units as an exact Decimal amount of the currency (for display and export)."""
    return Decimal(nanos).scaleb(-9)


def normalize_model(model: str | None) -> str:
    """The key a model is priced under: trimmed and lower-case ('' for a charge without one)."""
    return (model or "").strip().lower()
