"""`billing totals` without a database: the SQL builder and the renderers.

The builder is the only place user text meets SQL, so these tests pin that every value is a
bound parameter and that group-by names can only come from the whitelist.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import date
from decimal import Decimal

import pytest
from rich.console import Console

from streams.cli.errors import one_line
from streams.cli.totals import render_table
from streams.ops.totals import (
    DEFAULT_GROUP_BY,
    GROUP_COLUMNS,
    METRICS,
    TotalsQuery,
    build_totals_sql,
    check_group_by,
    output_columns,
    parse_group_by,
    to_csv,
    to_json,
)
from streams.redaction import url_secrets

HOSTILE = "x'); DROP TABLE daily_billing_records; --"


def clause(sql: str, keyword: str) -> str:
    """The text of one clause (WHERE, GROUP BY, ORDER BY, HAVING), whitespace collapsed."""
    match = re.search(rf"^{keyword} (.*?)(?=^(?:GROUP BY|ORDER BY|HAVING) |\Z)", sql, re.M | re.S)
    return " ".join(match.group(1).split()) if match else ""


def placeholders(sql: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})


def test_default_query_has_no_where_and_groups_by_the_default() -> None:
    sql, params = build_totals_sql(TotalsQuery())
    assert params == []
    assert "WHERE" not in sql
    assert DEFAULT_GROUP_BY == ("date", "account", "provider", "charge_type")
    expected = '"date", "account_id", "provider", "charge_type"'
    assert clause(sql, "GROUP BY") == expected
    assert clause(sql, "ORDER BY") == expected


def test_every_metric_is_summed_and_rows_and_final_are_reported() -> None:
    sql, _ = build_totals_sql(TotalsQuery())
    for metric in METRICS:
        assert f'COALESCE(sum("{metric}"), 0)::bigint AS "{metric}"' in sql
    assert 'count(*)::bigint AS "rows"' in sql
    assert 'bool_and(finalized_at IS NOT NULL) AS "final"' in sql
    assert "FROM daily_billing_records" in sql


def test_filters_produce_the_expected_where_with_bound_parameters() -> None:
    q = TotalsQuery(
        account=["acme", "globex"],
        user="alice",
        provider=("openai",),
        charge_type=["completion"],
        date_from=date(2026, 11, 1),
        date_to=date(2026, 11, 30),
        final_only=True,
    )
    sql, params = build_totals_sql(q)
    assert clause(sql, "WHERE") == (
        '"account_id" = ANY($1::text[]) AND "user_id" = ANY($2::text[]) '
        'AND "provider" = ANY($3::text[]) AND "charge_type" = ANY($4::text[]) '
        'AND "date" >= $5::date AND "date" <= $6::date AND finalized_at IS NOT NULL'
    )
    assert params == [
        ["acme", "globex"],
        ["alice"],
        ["openai"],
        ["completion"],
        date(2026, 11, 1),
        date(2026, 11, 30),
    ]
    assert placeholders(sql) == list(range(1, len(params) + 1))


@pytest.mark.parametrize(
    ("query", "where", "params"),
    [
        (TotalsQuery(provider="openai"), '"provider" = ANY($1::text[])', [["openai"]]),
        (TotalsQuery(date_to=date(2026, 1, 2)), '"date" <= $1::date', [date(2026, 1, 2)]),
        (
            TotalsQuery(user=["u1", "u2"], date_from=date(2026, 1, 1)),
            '"user_id" = ANY($1::text[]) AND "date" >= $2::date',
            [["u1", "u2"], date(2026, 1, 1)],
        ),
        (TotalsQuery(final_only=True), "finalized_at IS NOT NULL", []),
        (TotalsQuery(currency=" usd"), '"currency" = ANY($1::text[])', [["USD"]]),
    ],
)
def test_each_filter_alone(query: TotalsQuery, where: str, params: list[object]) -> None:
    sql, got = build_totals_sql(query)
    assert clause(sql, "WHERE") == where
    assert got == params
    assert placeholders(sql) == list(range(1, len(params) + 1))


def test_values_never_reach_the_sql_text() -> None:
    q = TotalsQuery(account=HOSTILE, user=HOSTILE, provider=HOSTILE, charge_type=HOSTILE)
    sql, params = build_totals_sql(q)
    assert "DROP" not in sql and "'" not in sql
    assert params == [[HOSTILE]] * 4


@pytest.mark.parametrize(
    "bad", [("date", "colour"), ("date; DROP TABLE x",), ('"date"',), ("account_id",), ("Date",)]
)
def test_group_by_outside_the_whitelist_is_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="valid names: date, account, user, provider, charge_type"):
        build_totals_sql(TotalsQuery(group_by=bad))


def test_repeated_group_by_is_refused() -> None:
    with pytest.raises(ValueError, match="must not repeat"):
        build_totals_sql(TotalsQuery(group_by=("date", "date")))


def test_group_by_order_is_kept_and_names_map_to_columns() -> None:
    sql, _ = build_totals_sql(TotalsQuery(group_by=("user", "charge_type", "date")))
    assert clause(sql, "GROUP BY") == '"user_id", "charge_type", "date"'
    assert clause(sql, "ORDER BY") == '"user_id", "charge_type", "date"'
    assert sql.startswith('SELECT "user_id",\n       "charge_type",\n       "date",')
    assert set(GROUP_COLUMNS.values()) == {
        "date",
        "account_id",
        "user_id",
        "provider",
        "charge_type",
        "model",
    }
    assert "FROM daily_billing_records" in sql  # the daily rows, unless the model is asked for


def test_the_model_is_read_from_the_rows_by_model() -> None:
    sql, params = build_totals_sql(TotalsQuery(group_by=("account", "model")))
    assert "FROM daily_model_records" in sql and clause(sql, "GROUP BY") == '"account_id", "model"'
    sql, params = build_totals_sql(TotalsQuery(group_by=("account",), model=("gpt-4o",)))
    assert "FROM daily_model_records" in sql and params == [["gpt-4o"]]
    assert 'round(COALESCE(sum("cost_nanos"), 0)::numeric / 1000000000, 9) AS "cost"' in sql


def test_empty_group_by_is_one_grand_total_and_never_a_row_of_zeros() -> None:
    sql, _ = build_totals_sql(TotalsQuery(group_by=()))
    assert "GROUP BY" not in sql and "ORDER BY" not in sql
    assert clause(sql, "HAVING") == "count(*) > 0"


def test_reversed_date_range_is_refused() -> None:
    with pytest.raises(ValueError, match="empty date range"):
        build_totals_sql(TotalsQuery(date_from=date(2026, 2, 1), date_to=date(2026, 1, 31)))
    build_totals_sql(TotalsQuery(date_from=date(2026, 2, 1), date_to=date(2026, 2, 1)))


def test_query_is_immutable_and_hashable() -> None:
    q = TotalsQuery(account=["a"])
    assert q.account == ("a",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.account = ("b",)  # type: ignore[misc]
    assert hash(q) == hash(TotalsQuery(account="a"))


def test_parse_group_by_and_output_columns() -> None:
    assert parse_group_by(" date, Provider,charge-type ,") == ("date", "provider", "charge_type")
    assert check_group_by(("user",)) == ("user",)
    cols = output_columns(TotalsQuery(group_by=("account", "date")))
    assert cols == [
        "account_id",
        "date",
        *METRICS,
        "unpriced_charge_count",
        "cost",
        "currency",
        "rows",
        "final",
    ]


MONEY_1 = {"unpriced_charge_count": 1, "cost": Decimal("1234.500000001"), "currency": "USD"}
MONEY_2 = {"unpriced_charge_count": 0, "cost": Decimal("0.000000002"), "currency": "USD"}
ROWS = [
    {"date": date(2026, 11, 20), "provider": "openai", **dict.fromkeys(METRICS, 1_234_567),
     **MONEY_1, "rows": 2, "final": True},
    {"date": date(2026, 11, 21), "provider": "openai", **dict.fromkeys(METRICS, 3),
     **MONEY_2, "rows": 1, "final": False},
]  # fmt: skip


def test_json_keeps_ints_and_iso_dates() -> None:
    data = json.loads(to_json(ROWS))
    assert data[0]["date"] == "2026-11-20" and data[0]["total_tokens"] == 1_234_567
    assert isinstance(data[0]["total_tokens"], int) and data[1]["final"] is False
    assert data[0]["cost"] == "1234.500000001"  # a decimal string: exact, never a float
    assert json.loads(to_json([])) == []


def test_csv_has_a_header_even_when_empty() -> None:
    parsed = list(csv.DictReader(io.StringIO(to_csv(ROWS))))
    assert parsed[1] == {"date": "2026-11-21", "provider": "openai", **dict.fromkeys(METRICS, "3"),
                         "unpriced_charge_count": "0", "cost": "0.000000002", "currency": "USD",
                         "rows": "1", "final": "false"}  # fmt: skip
    header = to_csv([], output_columns(TotalsQuery(group_by=("provider",))))
    money = ["unpriced_charge_count", "cost", "currency"]
    assert header.splitlines() == [",".join(["provider", *METRICS, *money, "rows", "final"])]


def test_table_has_separators_a_totals_footer_and_marks_provisional() -> None:
    console = Console(width=250, record=True, color_system=None)
    render_table(ROWS, console)
    text = console.export_text()
    assert "1,234,567" in text
    footer = next(line for line in text.splitlines() if "TOTAL" in line)
    assert footer.count("1,234,570") == len(METRICS) and "provisional" in footer
    assert "1,234.500000003" in footer and "cost USD" in text  # exact, sub-cent digits kept
    assert "0.000000002" in text
    assert sum("provisional" in line and "2026-11-21" in line for line in text.splitlines()) == 1
    console = Console(width=250, record=True, color_system=None)
    render_table([], console)
    assert "No billing records match" in console.export_text()


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://postgres:s3cr%40t@db:5432/billing", "s3cr@t"),
        ("postgresql://postgres:s3cr%40t@db:5432/billing", "s3cr%40t"),
        ("postgresql://postgres@db/billing?password=hunter22", "hunter22"),
    ],
)
def test_redact_removes_the_password_and_newlines(dsn: str, secret: str) -> None:
    text = one_line(f"auth failed for {secret}\nin {dsn}", url_secrets(dsn))
    assert secret not in text and "\n" not in text and "***" in text
