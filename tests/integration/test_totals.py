"""`billing totals` against a real Postgres: known rows in, exact sums out.

Each module run gets its own throwaway database with the real migration applied, so the query
is checked against the real schema (bigint sums, NULL `finalized_at`) and not a mock.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner

from streams.cli.totals import totals
from streams.config.settings import get_settings
from streams.ops.totals import GROUP_COLUMNS, METRICS, TotalsQuery, fetch_totals, to_csv, to_json
from streams.sink.migrate import migrate as apply_migrations

pytestmark = pytest.mark.integration

D1, D2, D3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
G = 10**9
KEY = ("account_id", "user_id", "provider", "date", "charge_type")
# account, user, provider, date, charge_type, then METRICS in order, then final?
DATA: list[tuple[Any, ...]] = [
    ("acme", "alice", "openai", D1, "completion", 100, 50, 150, 10, 0, 0, 2, 0, True),
    ("acme", "bob", "openai", D1, "completion", 200, 100, 300, 0, 0, 5, 3, 1, True),
    ("acme", "alice", "anthropic", D1, "completion", 1000, 500, 1500, 0, 400, 0, 1, 0, True),
    ("acme", "alice", "openai", D1, "embedding", 40, 0, 40, 0, 0, 0, 4, 0, True),
    ("acme", "alice", "openai", D2, "completion", 7, 3, 10, 1, 0, 2, 1, 0, False),
    ("globex", "carol", "openai", D1, "completion", 5000, 2500, 7500, 100, 30, 50, 10, 2, True),
    # beyond int32 on purpose: sums must stay exact integers
    ("globex", "carol", "googleai", D2, "completion", 3 * G, 3 * G // 2, 9 * G // 2, 0, 0, 700, 20, 0, False),
    ("globex", "alice", "googleai", D3, "completion", 1, 1, 2, 0, 0, 0, 1, 0, False),
]
ROWS = [dict(zip((*KEY, *METRICS, "final"), r, strict=True)) for r in DATA]
# Money per row, derived from its counts so that the reference can sum it too: an odd number of
# nano-units per row, so a lost sub-cent digit would show.
COST_SQL = """UPDATE daily_billing_records SET cost_nanos = total_tokens * 1234 + 1, currency = 'USD',
                  unpriced_charge_count = late_charge_count"""


def cost_nanos(row: dict[str, Any]) -> int:
    return int(row["total_tokens"]) * 1234 + 1


def admin_dsn() -> str:
    """The maintenance database of the server the suite uses (BILLING_DATABASE_URL's, if set)."""
    url = os.environ.get("BILLING_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/billing")
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def with_db(name: str) -> str:
    return urlunsplit(urlsplit(admin_dsn())._replace(path=f"/{name}"))


async def _create(name: str, migrate: bool) -> None:
    admin = await asyncpg.connect(admin_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    if not migrate:
        return
    conn = await asyncpg.connect(with_db(name))
    try:
        await apply_migrations(conn)
        await conn.executemany(
            """INSERT INTO daily_billing_records (account_id, user_id, provider, date, charge_type,
                   prompt_tokens, completion_tokens, total_tokens, cached_tokens, cache_write_tokens,
                   reasoning_tokens, charge_count, late_charge_count, finalized_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       CASE WHEN $14::bool THEN now() END)""",
            DATA,
        )
        await conn.execute(COST_SQL)
    finally:
        await conn.close()


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(admin_dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _throwaway_db(migrate: bool = True) -> Iterator[str]:
    # Sync fixture + asyncio.run: independent of pytest-asyncio's loop scope settings.
    name = f"billing_totals_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create(name, migrate))
    try:
        yield with_db(name)
    finally:
        asyncio.run(_drop(name))


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    yield from _throwaway_db()


@pytest.fixture(scope="module")
def empty_dsn() -> Iterator[str]:
    yield from _throwaway_db(migrate=False)


def reference(q: TotalsQuery) -> list[dict[str, Any]]:
    """The same totals computed in Python from DATA, to compare the SQL against."""
    keep = {
        "account_id": q.account,
        "user_id": q.user,
        "provider": q.provider,
        "charge_type": q.charge_type,
    }
    cols = [GROUP_COLUMNS[g] for g in q.group_by]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in ROWS:
        if any(values and row[col] not in values for col, values in keep.items()):
            continue
        if (q.date_from and row["date"] < q.date_from) or (q.date_to and row["date"] > q.date_to):
            continue
        if q.final_only and not row["final"]:
            continue
        key = tuple(row[c] for c in cols)
        acc = groups.setdefault(
            key,
            {**dict(zip(cols, key, strict=True)), **dict.fromkeys(METRICS, 0), "unpriced_charge_count": 0}
            | {"cost": Decimal(0), "currency": "USD", "rows": 0, "final": True},
        )
        for m in METRICS:
            acc[m] += row[m]
        acc["unpriced_charge_count"] += row["late_charge_count"]
        acc["cost"] += Decimal(cost_nanos(row)).scaleb(-9)
        acc["rows"] += 1
        acc["final"] = acc["final"] and row["final"]
    return [groups[k] for k in sorted(groups)]


GROUP_BYS = [
    ("date", "account", "provider", "charge_type"),
    ("date",),
    ("provider",),
    ("account", "user"),
    ("charge_type", "date"),
    ("user", "provider", "date", "account", "charge_type"),
    (),
]


@pytest.mark.parametrize("group_by", GROUP_BYS, ids=lambda g: ",".join(g) or "none")
async def test_sums_per_group_match_the_rows(dsn: str, group_by: tuple[str, ...]) -> None:
    q = TotalsQuery(group_by=group_by)
    got = await fetch_totals(dsn, q)
    assert got == reference(q)
    assert all(type(r[m]) is int for r in got for m in (*METRICS, "rows"))


FILTERS = [
    {"account": "acme"},
    {"provider": ["openai", "anthropic"]},
    {"date_from": D2},
    {"date_from": D1, "date_to": D1},
    {"final_only": True},
    {"user": "alice", "charge_type": "completion"},
    {"account": ["globex"], "provider": "googleai", "date_to": D2},
    {"account": "nobody"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f))
@pytest.mark.parametrize("group_by", [("date", "account", "provider", "charge_type"), ("account",)])
async def test_filters_match_the_rows(dsn: str, filters: dict[str, Any], group_by: tuple[str, ...]) -> None:
    q = TotalsQuery(group_by=group_by, **filters)
    assert await fetch_totals(dsn, q) == reference(q)


async def test_exact_totals_by_provider(dsn: str) -> None:
    """Hand-computed numbers, so a bug shared by the SQL and `reference` cannot hide."""
    got = await fetch_totals(dsn, TotalsQuery(group_by=("provider",)))
    assert [(r["provider"], *(r[m] for m in METRICS), r["rows"], r["final"]) for r in got] == [
        ("anthropic", 1000, 500, 1500, 0, 400, 0, 1, 0, 1, True),
        ("googleai", 3_000_000_001, 1_500_000_001, 4_500_000_002, 0, 0, 700, 21, 0, 2, False),
        ("openai", 5347, 2653, 8000, 111, 30, 57, 20, 3, 5, False),
    ]


async def test_final_only_by_account_counts_closed_days_only(dsn: str) -> None:
    got = await fetch_totals(dsn, TotalsQuery(group_by=("account",), final_only=True))
    assert [(r["account_id"], r["total_tokens"], r["charge_count"], r["late_charge_count"]) for r in got] == [
        ("acme", 1990, 10, 1),
        ("globex", 7500, 10, 2),
    ]
    assert all(r["final"] for r in got)


async def test_final_flag_per_day(dsn: str) -> None:
    got = await fetch_totals(dsn, TotalsQuery(group_by=("date",)))
    assert [(r["date"], r["final"], r["rows"]) for r in got] == [
        (D1, True, 5),
        (D2, False, 2),
        (D3, False, 1),
    ]


async def test_connection_and_dsn_give_the_same_rows_and_values_stay_data(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        q = TotalsQuery(group_by=("account", "date"))
        assert await fetch_totals(conn, q) == await fetch_totals(dsn, q)
        hostile = TotalsQuery(account="acme' OR '1'='1", provider="x'); DROP TABLE daily_billing_records; --")
        assert await fetch_totals(conn, hostile) == []
        assert await conn.fetchval("SELECT count(*) FROM daily_billing_records") == len(DATA)
    finally:
        await conn.close()


async def test_json_and_csv_parse_back_to_the_same_numbers(dsn: str) -> None:
    rows = await fetch_totals(dsn, TotalsQuery())
    as_json = json.loads(to_json(rows))
    assert as_json == [{**r, "date": r["date"].isoformat(), "cost": f"{r['cost']:f}"} for r in rows]
    assert all(Decimal(j["cost"]) == r["cost"] for j, r in zip(as_json, rows, strict=True))
    as_csv = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(as_csv) == len(rows)
    for parsed, row in zip(as_csv, rows, strict=True):
        assert {m: int(parsed[m]) for m in (*METRICS, "rows")} == {m: row[m] for m in (*METRICS, "rows")}
        assert date.fromisoformat(parsed["date"]) == row["date"]
        assert Decimal(parsed["cost"]) == row["cost"] and parsed["currency"] == "USD"
        assert parsed["final"] == str(row["final"]).lower()


# ------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def run_cli() -> Iterator[Any]:
    """Invoke `totals` with BILLING_DATABASE_URL set; the settings cache is cleared around it."""

    def run(url: str, *args: str) -> Any:
        get_settings.cache_clear()
        return CliRunner(env={"BILLING_DATABASE_URL": url}).invoke(totals, list(args))

    yield run
    get_settings.cache_clear()


def test_cli_json_equals_fetch(dsn: str, run_cli: Any) -> None:
    result = run_cli(dsn, "--format", "json", "--group-by", "date,provider", "--from", "2026-11-21")
    assert result.exit_code == 0, result.output
    q = TotalsQuery(group_by=("date", "provider"), date_from=D2)
    assert json.loads(result.stdout) == json.loads(to_json(reference(q)))


def test_cli_csv_with_repeated_filters(dsn: str, run_cli: Any) -> None:
    result = run_cli(
        dsn, "--format", "csv", "--group-by", "account", "--provider", "openai", "--provider", "anthropic"
    )
    assert result.exit_code == 0, result.output
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["account_id"], int(r["total_tokens"]), int(r["rows"])) for r in parsed] == [
        ("acme", 2000, 5),
        ("globex", 7500, 1),
    ]


def test_cli_table_has_separators_footer_and_provisional(dsn: str, run_cli: Any) -> None:
    result = run_cli(dsn, "--group-by", "date,provider")
    assert result.exit_code == 0, result.output
    assert "4,500,000,000" in result.stdout and "provisional" in result.stdout
    footer = next(line for line in result.stdout.splitlines() if "TOTAL" in line)
    assert "4,500,009,502" in footer  # every total_tokens summed


def test_cli_final_only_and_empty_result(dsn: str, run_cli: Any) -> None:
    result = run_cli(dsn, "--final-only", "--from", "2026-11-21", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "date,account_id,provider,charge_type,"
        + ",".join(METRICS)
        + ",unpriced_charge_count,cost,currency,rows,final"
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from", "2026-13-01"], "--from: '2026-13-01' is not a date; use YYYY-MM-DD"),
        (["--from", "yesterday"], "--from: 'yesterday' is not a date"),
        (["--to", "20261101"], "--to: '20261101' is not a date"),
        (["--group-by", "date,colour"], "valid names: date, account, user, provider, charge_type"),
        (["--from", "2026-11-02", "--to", "2026-11-01"], "empty date range"),
    ],
)
def test_cli_bad_input_is_one_line_and_non_zero(dsn: str, run_cli: Any, args: list[str], needle: str) -> None:
    result = run_cli(dsn, *args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert needle in result.output and result.stdout == ""


def test_cli_unreachable_server_never_shows_the_password(run_cli: Any) -> None:
    result = run_cli("postgresql://postgres:Sup3rSecretPw@127.0.0.1:1/billing", "--format", "json")
    assert result.exit_code == 4  # unreachable
    assert (
        result.output.count("\n") == 1
        and "cannot connect to Postgres at 127.0.0.1:1/billing" in result.output
    )
    assert "Sup3rSecretPw" not in result.output


def test_cli_missing_database_never_shows_the_password(run_cli: Any) -> None:
    parts = urlsplit(with_db("billing_totals_no_such_db"))
    netloc = f"{parts.username or 'postgres'}:Sup3rSecretPw@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=netloc))
    result = run_cli(url)
    assert result.exit_code == 5 and result.output.count("\n") == 1  # the database is not ready
    assert "does not exist" in result.output and "Sup3rSecretPw" not in result.output


def test_cli_unmigrated_database_says_to_migrate(empty_dsn: str, run_cli: Any) -> None:
    result = run_cli(empty_dsn)
    assert result.exit_code == 5 and result.output.count("\n") == 1
    assert "run `billing migrate`" in result.output
