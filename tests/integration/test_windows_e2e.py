"""Issue 3: day boundaries in a DST zone, and an idle partition that must not hold a day open."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from streams.embedded_broker import ensure_topics
from tests.integration.test_pipeline import rows_match
from tests.support import (
    WorkerProcess,
    charge_dict,
    encode_batch,
    fetch_rows,
    ground_truth,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
NEW_YORK = ZoneInfo("America/New_York")


async def test_new_york_25_hour_day_of_2026_11_01(broker, database, tmp_path: Path):
    env = pipeline_env(broker, database, tmp_path / "data", timezone="America/New_York", late_horizon="3650d")
    await ensure_topics(settings_from(env))
    instants = [
        "2026-11-01T03:30:00Z",  # 23:30 EDT on Oct 31
        "2026-11-01T04:30:00Z",  # 00:30 EDT: the day starts
        "2026-11-01T05:30:00Z",  # 01:30 EDT
        "2026-11-01T06:30:00Z",  # 01:30 EST: the repeated hour
        "2026-11-02T04:30:00Z",  # 23:30 EST: hour 25 of Nov 1
        "2026-11-02T05:30:00Z",  # 00:30 EST on Nov 2
    ]
    charges = [
        charge_dict(
            "dst",
            "u",
            "openai",
            "completion",
            datetime.fromisoformat(t.replace("Z", "+00:00")),
            10 * (i + 1),
            1,
        )
        for i, t in enumerate(instants)
    ]
    expected = ground_truth(charges, NEW_YORK)
    nov1 = expected[("dst", "u", "openai", datetime(2026, 11, 1).date(), "completion")]
    assert nov1["charge_count"] == 4 and nov1["prompt_tokens"] == 20 + 30 + 40 + 50  # the test's own truth
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        records = [(b"dst", encode_batch([c]), None) for c in charges]
        await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)
        await wait_until(
            lambda: rows_match(database, expected), 60, "DST day rows", on_timeout=worker.log_tail
        )
        rows = await fetch_rows(database, ["dst"])
        assert sorted(k[3].isoformat() for k in rows) == ["2026-10-31", "2026-11-01", "2026-11-02"]
    finally:
        worker.stop()


async def _yesterday_final(database: str, key: tuple) -> bool:
    row = (await fetch_rows(database)).get(key)
    return row is not None and row["finalized_at"] is not None


async def test_idle_partition_stops_holding_the_day_open(broker, database, tmp_path: Path):
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
    # Yesterday closes by watermark once event time passes midnight + grace = now + 120 s, by
    # the wall clock only at now + 120 s + idle. Partition 1 runs ahead (now + 180 s, inside the
    # clock-skew limit); partition 0 lags at yesterday noon and holds the watermark back.
    grace = int((now - midnight).total_seconds()) + 120
    env = pipeline_env(broker, database, tmp_path / "data", grace=f"{grace}s", idle_timeout="6s")
    await ensure_topics(settings_from(env))
    bootstrap, topic = env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"]
    yesterday_noon = midnight - timedelta(hours=12)
    key = ("lagging", "u", "openai", yesterday_noon.date(), "completion")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()

    async def keep_ahead_active() -> None:
        while True:
            ahead = charge_dict("ahead", "u", "openai", "completion", now + timedelta(seconds=180), 1, 1)
            await produce_raw(bootstrap, topic, [(b"ahead", encode_batch([ahead]), 1)])
            await asyncio.sleep(1)

    ahead_task = asyncio.create_task(keep_ahead_active())
    try:
        # Keep partition 0 active with yesterday's charges: the day must stay open meanwhile.
        stop_at = time.monotonic() + 15
        while time.monotonic() < stop_at:
            lag = charge_dict("lagging", "u", "openai", "completion", yesterday_noon, 1, 1)
            await produce_raw(bootstrap, topic, [(b"lagging", encode_batch([lag]), 0)])
            await asyncio.sleep(1)
            assert not await _yesterday_final(database, key), "an active lagging partition must hold the day"
        assert key in await fetch_rows(database)
        # Partition 0 goes quiet: after the idle timeout it no longer holds the watermark.
        started = time.monotonic()
        await wait_until(
            lambda: _yesterday_final(database, key), 60, "idle partition released", on_timeout=worker.log_tail
        )
        assert time.monotonic() - started < 60
        conn = await asyncpg.connect(database)
        try:
            closed = await conn.fetchval("SELECT closed_through FROM billing_state WHERE topic = $1", topic)
        finally:
            await conn.close()
        assert closed == yesterday_noon.date()
    finally:
        ahead_task.cancel()
        worker.stop()
