"""Day boundaries in a DST zone, and closing days only when nothing on-time can still be waiting."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from streams.kafka.topics import ensure_topics
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


async def _standing(database: str, topic: str) -> tuple[object, dict[int, int]]:
    conn = await asyncpg.connect(database)
    try:
        closed = await conn.fetchval("SELECT closed_through FROM billing_calendar")
        rows = await conn.fetch(
            "SELECT partition, applied_offset FROM billing_partitions WHERE topic = $1", topic
        )
        return closed, {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def test_a_backlog_after_downtime_is_never_late_and_a_lagging_partition_holds_the_days_open(
    broker, database, tmp_path: Path
):
    """Seven days of history reach the topic while no worker runs (downtime, or a backfill into a
    new installation). The worker closes the past days only once it has read every partition to
    the end it observed after the days had ended: a partition with unread records holds them open,
    however far the others are, and no charge of the backlog is late or revises a row."""
    env = pipeline_env(broker, database, tmp_path / "data", grace="1s", batch_records="200")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    produced = [
        charge_dict(
            f"acct{i % 7}" if i < 5000 else "light",
            "u",
            "openai",
            "completion",
            now - timedelta(days=1 + i % 7, minutes=i % 600),
            3,
            2,
        )
        for i in range(6000)
    ]
    # one partition gets a long backlog of single-charge records, the others a few batch records
    heavy = [(c["account_id"].encode(), encode_batch([c]), 3) for c in produced[:5000]]
    light = [
        (produced[i]["account_id"].encode(), encode_batch(produced[i : i + 50]), 1 + (i // 50) % 2)
        for i in range(5000, 6000, 50)
    ]
    metas = await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], topic, light + heavy)
    end_of_heavy = max(m.offset for m in metas if m.partition == 3) + 1
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 180
        while True:  # watch the closing while the backlog drains
            closed, applied = await _standing(database, topic)
            if closed is not None:
                assert applied.get(3, -1) + 1 >= end_of_heavy, "a day closed over unread records"
                break
            assert time.monotonic() < deadline, worker.log_tail()
            await asyncio.sleep(0.2)
        expected = ground_truth(produced, ZoneInfo("UTC"))
        await wait_until(
            lambda: rows_match(database, expected), 60, "backlog rows", on_timeout=worker.log_tail
        )
        rows = await fetch_rows(database)
        assert closed == (now - timedelta(days=1)).date()
        assert all(r["finalized_at"] is not None for r in rows.values())
        assert sum(r["late_charge_count"] for r in rows.values()) == 0
        assert sum(r["revision"] for r in rows.values()) == 0
    finally:
        worker.stop()
