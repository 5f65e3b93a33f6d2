"""Money end to end on the real broker and Postgres: the daily rows' cost equals an independent
Decimal computation to the last nano-unit, across three providers, cache reads, cache writes and
reasoning tokens (the callers' own cost estimates summed apart), a price change in the middle of
a day, an account's own price and a model without a price; the same after a worker is SIGKILLed mid-stream, a replay and a rebuild; and a corrected price
reaches exactly the affected rows through a rebuild.

Prices go in through the CLI (`billing prices import FILE`, `billing prices set`).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from streams.cli.totals import money
from tests.integration.test_replay_rebuild import committed, past_days_final, produce, read_stamps
from tests.support import (
    ROOT,
    WorkerProcess,
    charge_dict,
    closing_pipeline,
    fetch_rows,
    ground_truth,
    mismatches,
    wait_until,
)

pytestmark = pytest.mark.integration
ZONE = ZoneInfo("UTC")
PARTITIONS = 4
VIP = "acct-vip"
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4", "googleai": "gemini-2.5-pro"}
UNKNOWN = ("openai", "mystery-1")


def price_rows(day: date) -> list[dict[str, Any]]:
    """The book of the test: defaults for three providers, gpt-4o dearer from noon of `day`."""
    noon = datetime.combine(day, time(12), UTC)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        {
            "provider": "openai",
            "model": "gpt-4o",
            "valid_from": start,
            "input": "2.5",
            "output": "10",
            "cache_read": "1.25",
        },
        {
            "provider": "openai",
            "model": "gpt-4o",
            "valid_from": noon,
            "input": "2.75",
            "output": "11",
            "cache_read": "1.375",
        },
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "valid_from": start,
            "input": "3",
            "output": "15",
            "cache_read": "0.3",
            "cache_write": "3.75",
        },
        {
            "provider": "googleai",
            "model": "gemini-2.5-pro",
            "valid_from": start,
            "input": "1.25",
            "output": "10",
            "cache_read": "0.125",
            "reasoning": "10.5",
        },
    ]


# The account's own anthropic price, from before any charge of the test.
OVERRIDE = {
    "provider": "anthropic",
    "model": "claude-sonnet-4",
    "account_id": VIP,
    "valid_from": datetime(2025, 6, 1, tzinfo=UTC),
    "input": "2.4",
    "output": "12",
}


def in_force(book: list[dict[str, Any]], charge: dict[str, Any]) -> dict[str, Any] | None:
    """The price of a charge found by scanning the book: the account's latest started, else the
    default's latest started."""
    when = datetime.fromisoformat(charge["occurred_at"])
    model = charge.get("model", "")
    for owner in (charge["account_id"], None):
        started = [
            p
            for p in book
            if p.get("account_id") == owner
            and (p["provider"], p["model"]) == (charge["provider"], model)
            and p["valid_from"] <= when
        ]
        if started:
            return max(started, key=lambda p: p["valid_from"])
    return None


def nanos(charge: dict[str, Any], price: dict[str, Any]) -> int:
    """Nano-units per token for each kind of token, half to even once per charge."""
    per_token = {
        k: Decimal(v) * 1000
        for k, v in price.items()
        if k in ("input", "output", "cache_read", "cache_write", "reasoning")
    }
    cached, reasoning = charge.get("cached_tokens", 0), charge.get("reasoning_tokens", 0)
    written = charge.get("cache_write_tokens", 0)
    total = (
        (charge["prompt_tokens"] - cached - written) * per_token["input"]
        + cached * per_token.get("cache_read", per_token["input"])
        + written * per_token.get("cache_write", per_token["input"])
        + (charge["completion_tokens"] - reasoning) * per_token["output"]
        + reasoning * per_token.get("reasoning", per_token["output"])
    )
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def cost_truth(
    charges: list[dict[str, Any]], book: list[dict[str, Any]], by_model: bool
) -> dict[tuple, dict[str, Any]]:
    """Expected cost columns per daily row (or per row by model), each key's first copy only."""
    out: dict[tuple, dict[str, Any]] = defaultdict(
        lambda: {"cost_nanos": 0, "unpriced_charge_count": 0, "currency": None}
    )
    seen = set()
    for c in charges:
        if (c["account_id"], c["event_id"]) in seen:
            continue
        seen.add((c["account_id"], c["event_id"]))
        day = datetime.fromisoformat(c["occurred_at"]).astimezone(ZONE).date()
        model = (c.get("model", ""),) if by_model else ()
        row = out[(c["account_id"], c["user_id"], c["provider"], *model, day, c["charge_type"])]
        price = in_force(book, c)
        if price is None:
            row["unpriced_charge_count"] += 1
        else:
            row["cost_nanos"] += nanos(c, price)
            row["currency"] = "USD"
    return dict(out)


def make_charges(rng: random.Random, days: list[date], now: datetime) -> list[dict[str, Any]]:
    out = []
    for day in days:
        start = datetime.combine(day, time(), UTC)
        for account in ("acct-a", "acct-b", VIP):
            for provider, model in [*MODELS.items(), UNKNOWN]:
                for _ in range(rng.randint(2, 6)):
                    when = min(start + timedelta(seconds=rng.randint(0, 86399)), now - timedelta(minutes=5))
                    prompt, completion = rng.randint(0, 5000), rng.randint(0, 3000)
                    cached = rng.randint(0, prompt)
                    # Cache writes on every provider: anthropic's price has a write rate, the
                    # others' writes cost input; some charges carry a caller's own cost estimate.
                    extra = (
                        {"cache_write_tokens": rng.randint(0, prompt - cached)} if rng.random() < 0.5 else {}
                    )
                    if rng.random() < 0.3:
                        extra["reported_cost_nanos"] = rng.randint(0, 10**9)
                    out.append(
                        charge_dict(
                            account,
                            f"{account}-u{rng.randint(0, 1)}",
                            provider,
                            "completion",
                            when,
                            prompt,
                            completion,
                            model=model,
                            cached_tokens=cached,
                            reasoning_tokens=rng.randint(0, completion),
                            **extra,
                        )
                    )
    rng.shuffle(out)
    return out


async def billing(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streams", *args]
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"billing {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


async def model_rows(database: str) -> dict[tuple, dict[str, Any]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT * FROM daily_model_records")
    finally:
        await conn.close()
    return {
        (r["account_id"], r["user_id"], r["provider"], r["model"], r["date"], r["charge_type"]): dict(r)
        for r in rows
    }


async def exact(database: str, charges: list[dict[str, Any]], book: list[dict[str, Any]]) -> list[str]:
    """Every difference between both tables and the independent computation (empty when exact)."""
    daily = ground_truth(charges, ZONE)
    for key, cost in cost_truth(charges, book, by_model=False).items():
        daily[key].update(cost)
    problems = mismatches(daily, await fetch_rows(database))
    return problems + mismatches(cost_truth(charges, book, by_model=True), await model_rows(database))


async def test_cost_is_exact_through_a_kill_a_replay_a_rebuild_and_a_price_correction(
    broker: str, database: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    env = await closing_pipeline(broker, database, tmp_path / "data", now, PARTITIONS)
    book = price_rows(days[1])
    prices_csv = tmp_path / "prices.csv"
    header = ["provider", "model", "valid_from", "input", "output", "cache_read", "cache_write", "reasoning"]
    prices_csv.write_text(
        ",".join(header)
        + "\n"
        + "".join(
            ",".join(str(r.get(h, "")) if h != "valid_from" else r[h].isoformat() for h in header) + "\n"
            for r in book
        )
    )
    await billing(env, "prices", "import", str(prices_csv))
    o = OVERRIDE
    await billing(
        env,
        "prices",
        "set",
        "--provider",
        o["provider"],
        "--model",
        o["model"],
        "--account",
        VIP,
        "--valid-from",
        o["valid_from"].isoformat(),
        "--input",
        o["input"],
        "--output",
        o["output"],
    )
    book = [*book, OVERRIDE]

    charges = make_charges(random.Random(18), days, now)
    half = len(charges) // 2
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        records = await produce(env, charges[:half])
        # Killed once part of the first half is committed: what it had not committed is read again.
        await wait_until(lambda: _some_committed(env), 60, "a first commit", on_timeout=worker.log_tail)
        worker.kill()
        worker = WorkerProcess(env, tmp_path / "worker2.log").start()
        records += await produce(env, charges[half:])
        await wait_until(
            lambda: _no_problems(database, charges, book), 90, "exact cost", on_timeout=worker.log_tail
        )
        ends = {p: len(s) for p, s in (await read_stamps(env, records)).items()}
        await wait_until(
            lambda: _caught_up(env, ends), 60, f"offsets committed up to {ends}", on_timeout=worker.log_tail
        )
        assert any(r["unpriced_charge_count"] for r in (await fetch_rows(database)).values())
        # The unpriced model is named in the worker's metrics, so someone adds its price.
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{env['BILLING_WEB_PORT']}/metrics")).text
        assert 'billing_charges_unpriced_total{model="mystery-1",provider="openai"}' in metrics
        assert 'billing_cost_nanos_total{currency="USD"}' in metrics
        await wait_until(
            lambda: past_days_final(database, today), 90, "days final", on_timeout=worker.log_tail
        )

        # A replay of the whole topic changes nothing, not even updated_at.
        worker.stop()
        before = await fetch_rows(database), await model_rows(database)
        replay = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streams.cli.replay", "replay", "--to-offsets", "all:0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stderr
        worker = WorkerProcess(env, tmp_path / "worker3.log").start()
        await wait_until(lambda: _caught_up(env, ends), 60, "replay committed", on_timeout=worker.log_tail)
        assert (await fetch_rows(database), await model_rows(database)) == before

        # A rebuild with the same book changes nothing either.
        span = ("--from", str(days[0]), "--to", str(days[1]))
        await billing(env, "rebuild", *span)
        assert (await fetch_rows(database), await model_rows(database)) == before

        # A corrected price (gpt-4o's morning rate) and a price for the unknown model, then a
        # rebuild: exactly the rows whose cost changed move (revision and updated_at), no other.
        corrected = {**book[0], "input": "2.6"}
        added = {
            "provider": UNKNOWN[0],
            "model": UNKNOWN[1],
            "valid_from": datetime(2025, 1, 1, tzinfo=UTC),
            "input": "0.5",
            "output": "1",
        }
        for p in (corrected, added):
            await billing(
                env,
                "prices",
                "set",
                "--provider",
                p["provider"],
                "--model",
                p["model"],
                "--valid-from",
                p["valid_from"].isoformat(),
                "--input",
                p["input"],
                "--output",
                p["output"],
                *(("--cache-read", p["cache_read"]) if "cache_read" in p else ()),
            )
        old_book, book = book, [corrected, *book[1:], added]
        dry = await billing(env, "reprice", *span, "--dry-run")
        assert (await fetch_rows(database), await model_rows(database)) == before  # a dry run changes nothing
        per_account: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for i, priced in enumerate((old_book, book)):
            for key, row in cost_truth(charges, priced, by_model=False).items():
                per_account[key[0]][i] += row["cost_nanos"]
        for account, (was, now_cost) in per_account.items():  # every account's difference, exactly
            assert money(Decimal(now_cost - was).scaleb(-9)) in dry.stdout, (account, dry.stdout)
        await billing(env, "reprice", *span)
        assert await exact(database, charges, book) == []
        after = await fetch_rows(database)
        for key, old in before[0].items():
            moved = (
                after[key]["cost_nanos"] != old["cost_nanos"]
                or after[key]["unpriced_charge_count"] != old["unpriced_charge_count"]
            )
            assert (after[key]["revision"], after[key]["updated_at"] != old["updated_at"]) == (
                (old["revision"] + 1, True) if moved else (old["revision"], False)
            ), key
        assert not any(r["unpriced_charge_count"] for r in after.values())

        # The running worker takes the corrected book for what it counts next (late charges of
        # the closed day here): it reloads the book when the book's version moves.
        extra = make_charges(random.Random(81), [days[1]], now)[:40]
        await produce(env, extra)
        charges += extra
        await wait_until(
            lambda: _no_problems(database, charges, book),
            90,
            "late charges priced",
            on_timeout=worker.log_tail,
        )

        # Cost by model, as `billing totals` shows it: exact decimal strings.
        shown = await billing(env, "totals", "--group-by", "provider,model", "--format", "json")
        by_model: dict[tuple[str, str], int] = defaultdict(int)
        for key, row in cost_truth(charges, book, by_model=True).items():
            by_model[(key[2], key[3])] += row["cost_nanos"]
        got = {(r["provider"], r["model"]): Decimal(r["cost"]) for r in json.loads(shown.stdout)}
        assert got == {k: Decimal(v).scaleb(-9) for k, v in by_model.items()}
    finally:
        worker.stop()


async def _some_committed(env: dict[str, str]) -> bool:
    return any(offset > 0 for offset in (await committed(env)).values() if offset is not None)


async def _no_problems(database: str, charges: list[dict[str, Any]], book: list[dict[str, Any]]) -> bool:
    return not await exact(database, charges, book)


async def _caught_up(env: dict[str, str], ends: dict[int, int]) -> bool:
    """Every partition that has records is committed to its end (three accounts leave some empty)."""
    done = await committed(env)
    return all(done.get(p) == end for p, end in ends.items() if end)
