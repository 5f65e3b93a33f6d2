"""The dashboard's pure shaping of query rows: exact cost stacks, folding of small series, and
the order of the top table. The sums against real Postgres are in the integration tests."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from streams.dashboard.data import chart, cost_nanos, cost_text, parse_view, top
from streams.errors import BadRequest

DAY = date(2026, 11, 10)


def row(account: str, cost: str, day: date = DAY, tokens: int = 1) -> dict[str, Any]:
    return {
        "date": day,
        "account_id": account,
        "total_tokens": tokens,
        "cost": Decimal(cost),
        "currency": "USD",
        "final": True,
        "late_charge_count": 0,
    }


def test_cost_stacks_add_nano_units_exactly() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; a float sum of many costs drifts further.
    rows = [
        row("a", "0.100000001"),
        row("b", "0.200000001"),
        row("a", "9007199.254740993", date(2026, 11, 11)),
    ]
    got = chart(rows, "account", "cost")
    assert got["currency"] == "USD"
    assert got["days"][0]["stacks"] == {"a": "0.100000001", "b": "0.200000001"}
    assert got["days"][0]["total"] == "0.300000002"
    assert got["days"][1]["total"] == "9007199.254740993"  # beyond a double's 2**53 nano-units


def test_small_series_fold_into_other() -> None:
    rows = [row(f"acct{i}", f"{i}.000000001") for i in range(1, 6)]
    got = chart(rows, "account", "cost", keep=2)
    assert got["series"] == ["acct4", "acct5"] and got["folded"] == 3
    assert got["days"][0]["stacks"] == {"acct4": "4.000000001", "acct5": "5.000000001"}
    assert got["days"][0]["other"] == "6.000000003" and got["days"][0]["total"] == "15.000000005"
    counts = chart(rows, "account", "total_tokens", keep=10)
    assert counts["folded"] == 0 and counts["days"][0]["other"] == 0 and counts["days"][0]["total"] == 5


def test_an_account_named_like_the_other_stack_stays_its_own_series() -> None:
    rows = [row("(other)", "3"), row("b", "2"), row("c", "1")]
    got = chart(rows, "account", "cost", keep=2)
    assert got["days"][0]["stacks"] == {"(other)": "3.000000000", "b": "2.000000000"}
    assert got["days"][0]["other"] == "1.000000000"


def test_cost_with_a_digit_below_the_nano_unit_is_refused_not_truncated() -> None:
    assert cost_nanos(Decimal("1.000000001")) == 1_000_000_001
    assert cost_text(1_000_000_001) == "1.000000001" and cost_text(0) == "0.000000000"
    with pytest.raises(ValueError, match="nano-unit"):
        cost_nanos(Decimal("1.0000000001"))


def test_top_is_largest_cost_first_then_by_name() -> None:
    rows = [row("b", "2"), row("a", "2"), row("c", "10"), row("d", "0.5")]
    got = top(rows, limit=3)
    assert [r["account_id"] for r in got["rows"]] == ["c", "a", "b"] and got["count"] == 4
    assert got["rows"][0]["cost"] == "10"


@pytest.mark.parametrize(
    ("params", "choices", "message"),
    [
        ({"metric": ["dollars"]}, ("provider",), "metric: 'dollars' is not one of"),
        ({"by": ["provider"]}, ("account", "user"), "by: 'provider' is not one of account, user"),
    ],
)
def test_bad_chart_options(params: dict[str, list[str]], choices: tuple[str, ...], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_view(params, choices)
    assert parse_view({"metric": ["cost"], "by": ["account"]}).metric == "cost"
