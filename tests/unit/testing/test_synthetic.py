"""Synthetic charges: deterministic per seed, valid, spread over the days asked, skewed by account."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from schemas.charge import Charge
from streams.testing.synthetic import PROVIDERS, synthetic_charges

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_same_seed_same_charges_and_other_seed_other_charges() -> None:
    one = list(synthetic_charges(500, days=3, accounts=10, seed=7, now=NOW))
    two = list(synthetic_charges(500, days=3, accounts=10, seed=7, now=NOW))
    other = list(synthetic_charges(500, days=3, accounts=10, seed=8, now=NOW))
    assert one == two
    assert {c.event_id for c in one}.isdisjoint(c.event_id for c in other)


def test_event_ids_do_not_depend_on_the_clock() -> None:
    """A re-run with the same seed is a re-send (same ids) even without a fixed `now`."""
    one = [c.event_id for c in synthetic_charges(50, seed=3)]
    two = [c.event_id for c in synthetic_charges(50, seed=3, now=NOW)]
    assert one == two


def test_all_valid_unique_and_plausible() -> None:
    charges = list(synthetic_charges(5000, days=7, accounts=40, seed=1, now=NOW))
    assert len({c.event_id for c in charges}) == len(charges)
    for c in charges:
        assert Charge.model_validate(c.to_wire()) == c  # survives the wire, so the worker takes it
        assert 10 <= c.prompt_tokens <= 4000 and 1 <= c.completion_tokens <= 2000
        assert c.cached_tokens <= c.prompt_tokens and c.reasoning_tokens <= c.completion_tokens
        assert c.model in PROVIDERS[c.provider][1]
    assert {c.provider for c in charges} == set(PROVIDERS)
    assert {c.charge_type for c in charges} == {"completion", "plugin", "tool"}
    assert any(c.cached_tokens for c in charges) and any(c.reasoning_tokens for c in charges)


def test_spread_over_the_days_and_never_in_the_future() -> None:
    charges = list(synthetic_charges(7000, days=7, accounts=5, seed=2, now=NOW))
    assert all(NOW - timedelta(days=7) < c.occurred_at <= NOW for c in charges)
    per_day = Counter((NOW - c.occurred_at) // timedelta(days=1) for c in charges)
    assert sorted(per_day) == list(range(7))
    assert min(per_day.values()) > 800  # ~1000 each: uniform, not bunched


def test_accounts_are_skewed_and_have_one_to_five_users() -> None:
    charges = list(synthetic_charges(20_000, days=1, accounts=50, seed=4, now=NOW))
    per_account = Counter(c.account_id for c in charges)
    ranked = [per_account[f"acct-{i:05d}"] for i in range(50)]
    assert ranked[0] > 1.8 * ranked[1] > 0  # 1 : 1/2^1.1
    assert ranked[0] > 20 * ranked[49]
    assert sum(ranked[:5]) > 0.45 * len(charges)  # a few big customers
    per_account_users: dict[str, set[str]] = {}
    for c in charges:
        per_account_users.setdefault(c.account_id, set()).add(c.user_id)
    assert all(1 <= len(u) <= 5 for u in per_account_users.values())
    assert max(len(u) for u in per_account_users.values()) > 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        list(synthetic_charges(1, days=0))
    with pytest.raises(ValueError, match="aware"):
        list(synthetic_charges(1, now=datetime(2026, 1, 1)))
