"""Cost of a charge (streams.rules.pricing) and the price in force (streams.rules.price_book)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import PriceError
from streams.rules.price_book import PriceBook
from streams.rules.pricing import Price, cost_nanos, exact_cost, nanos_to_units, rounded

T0 = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass(frozen=True)
class C:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0


def price(**kw: object) -> Price:
    base: dict[str, object] = {
        "provider": "openai",
        "model": "gpt-4o",
        "valid_from": T0,
        "input": Decimal("2.5"),
        "output": Decimal("10"),
    }
    base.update(kw)
    return Price(**base)  # type: ignore[arg-type]


def by_hand(c: C, p: Price) -> int:
    """The cost written out per kind of token, in nano-units per token, with another rounding call."""
    nano_per_token = Decimal(1000)  # 10^9 nano-units / 10^6 tokens
    read = p.cache_read if p.cache_read is not None else p.input
    write = p.cache_write if p.cache_write is not None else p.input
    think = p.reasoning if p.reasoning is not None else p.output
    with localcontext() as ctx:
        ctx.prec = 100
        total = (
            Decimal(c.prompt_tokens - c.cached_tokens - c.cache_write_tokens) * p.input * nano_per_token
            + Decimal(c.cached_tokens) * read * nano_per_token
            + Decimal(c.cache_write_tokens) * write * nano_per_token
            + Decimal(c.completion_tokens - c.reasoning_tokens) * p.output * nano_per_token
            + Decimal(c.reasoning_tokens) * think * nano_per_token
        )
        return int(total.to_integral_value(rounding=ROUND_HALF_EVEN))


def test_cached_reads_and_reasoning_are_priced_inside_their_counts() -> None:
    p = price(cache_read=Decimal("1.25"), reasoning=Decimal("12"))
    # 1000 prompt of which 400 cached; 500 completion of which 200 reasoning:
    # 600 x 2.5 + 400 x 1.25 + 300 x 10 + 200 x 12 = 1500 + 500 + 3000 + 2400 = 7400 per million
    assert exact_cost(C(1000, 500, 400, 200), p) == Decimal("0.0074")
    assert cost_nanos(C(1000, 500, 400, 200), p) == 7_400_000


def test_missing_rates_fall_back_to_input_and_output() -> None:
    p = price()
    assert cost_nanos(C(1000, 500, 400, 200, 300), p) == cost_nanos(C(1000, 500), p) == 7_500_000


def test_cache_writes_are_priced_at_the_cache_write_rate_inside_the_prompt() -> None:
    # Anthropic's rule: writes at 1.25x input, reads at 0.1x. 1000 prompt = 300 uncached +
    # 200 read + 500 written: 300 x 3 + 200 x 0.3 + 500 x 3.75 = 900 + 60 + 1875 = 2835 per million.
    p = price(input=Decimal(3), output=Decimal(15), cache_read=Decimal("0.3"), cache_write=Decimal("3.75"))
    assert exact_cost(C(1000, 0, 200, 0, 500), p) == Decimal("0.002835")
    assert cost_nanos(C(1000, 0, 200, 0, 500), p) == 2_835_000
    # The same tokens with no write rate: the writes cost what input costs.
    assert (
        cost_nanos(C(1000, 0, 200, 0, 500), price(input=Decimal(3), cache_read=Decimal("0.3"))) == 2_460_000
    )


def test_one_rounding_half_to_even_per_charge() -> None:
    p = price(input=Decimal("0.0005"))  # half a nano-unit per token
    assert cost_nanos(C(1, 0), p) == 0  # 0.5 -> 0
    assert cost_nanos(C(3, 0), p) == 2  # 1.5 -> 2
    assert cost_nanos(C(5, 0), p) == 2  # 2.5 -> 2


def test_rates_of_any_exponent() -> None:
    p = price(input=Decimal("1E+2"), output=Decimal("0.0000001"), cache_read=Decimal("12.50"))
    assert cost_nanos(C(10, 10_000, 4), p) == 6 * 100_000 + 4 * 12_500 + 1 == by_hand(C(10, 10_000, 4), p)


def test_bad_prices_are_refused() -> None:
    with pytest.raises(PriceError):
        price(input=Decimal("-1"))
    with pytest.raises(PriceError):
        price(output=Decimal("NaN"))
    with pytest.raises(PriceError):
        price(valid_from=datetime(2026, 1, 1))
    with pytest.raises(PriceError):
        price(currency="dollars")
    with pytest.raises(PriceError):
        price(input=2.5)  # a float is never money


rates = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
optional_rates = st.none() | rates


@st.composite
def charges(draw: st.DrawFn) -> C:
    prompt = draw(st.integers(0, 10**12))
    completion = draw(st.integers(0, 10**12))
    cached = draw(st.integers(0, prompt))
    reasoning = draw(st.integers(0, completion))
    return C(prompt, completion, cached, reasoning, draw(st.integers(0, prompt - cached)))


@given(charges(), rates, rates, optional_rates, optional_rates, optional_rates)
def test_cost_equals_an_independent_decimal_computation(
    c: C, i: Decimal, o: Decimal, read: Decimal | None, write: Decimal | None, think: Decimal | None
) -> None:
    p = price(input=i, output=o, cache_read=read, cache_write=write, reasoning=think)
    assert cost_nanos(c, p) == by_hand(c, p) == rounded(exact_cost(c, p))
    assert abs(nanos_to_units(cost_nanos(c, p)) - exact_cost(c, p)) <= Decimal("0.0000000005")


def test_price_in_force_by_time_with_an_account_override() -> None:
    noon = T0 + timedelta(hours=12)
    book = PriceBook(
        [
            price(input=Decimal(1)),
            price(input=Decimal(2), valid_from=noon),
            price(input=Decimal(5), valid_from=T0 + timedelta(hours=18), account_id="acme"),
            price(model="Other", input=Decimal(9)),
        ]
    )
    at = [T0, noon - timedelta(microseconds=1), noon, T0 + timedelta(hours=19), T0 - timedelta(days=1)]
    expected = {
        "globex": [Decimal(1), Decimal(1), Decimal(2), Decimal(2), None],
        "acme": [Decimal(1), Decimal(1), Decimal(2), Decimal(5), None],
    }
    for account, wanted in expected.items():
        for moment, rate in zip(at, wanted, strict=True):
            for found in (
                book.price_at(account, "openai", "gpt-4o", moment),
                book.lookup(account, "openai", "GPT-4o ", moment),
            ):
                assert (found.input if found else None) == rate, (account, moment)
    assert book.lookup("acme", "openai", "other", T0) is not None  # names are matched lower-case
    assert book.lookup("acme", "anthropic", "gpt-4o", T0) is None  # a price is per provider
    assert book.lookup("acme", "openai", None, T0) is None  # no model: unpriced


@given(
    st.lists(
        st.tuples(st.integers(0, 72 * 60), st.sampled_from([None, "acme"]), st.integers(1, 9)), max_size=12
    ),
    st.lists(st.tuples(st.sampled_from(["acme", "globex"]), st.integers(-60, 73 * 60 * 60)), max_size=40),
)
def test_cached_lookup_agrees_with_the_plain_one(
    changes: list[tuple[int, str | None, int]], lookups: list[tuple[str, int]]
) -> None:
    book = PriceBook(
        (price(valid_from=T0 + timedelta(minutes=m), account_id=a, input=Decimal(r)) for m, a, r in changes),
        span_cache_size=1,  # starts over often: the answers must not depend on what it holds
    )
    # In any order, on and around the changes: each answer equals the uncached one, whatever
    # span the previous lookup of the same key left behind.
    moments = [(a, T0 + timedelta(seconds=s)) for a, s in lookups]
    moments += [
        (a, T0 + timedelta(minutes=m, seconds=d))
        for m, _, _ in changes
        for a in ("acme", "globex")
        for d in (-1, 0)
    ]
    for account, moment in moments:
        assert book.lookup(account, "openai", "gpt-4o", moment) == book.price_at(
            account, "openai", "gpt-4o", moment
        )
    assert len(book._spans) <= 1  # bounded: a long-running worker does not keep every key
