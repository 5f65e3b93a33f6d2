"""End to end: charges on a real broker become exact rows in a real Postgres."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.topics import ensure_topics
from tests.support import (
    WorkerProcess,
    charge_dict,
    closing_grace,
    encode_batch,
    fetch_rows,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
UTC = UTC
PROVIDERS = ("openai", "anthropic", "googleai", "metaai")
TYPES = ("completion", "plugin", "tool")


async def start_pipeline(broker: str, database: str, tmp_path: Path, **overrides: str):
    env = pipeline_env(broker, database, tmp_path / "data", **overrides)
    await ensure_topics(settings_from(env))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    return env, worker


async def produce_charges(env: dict[str, str], charges: list[dict], partition_of=None) -> None:
    """One record per charge or per small same-account group, keyed by account."""
    records = []
    for c in charges:
        partition = partition_of(c) if partition_of else None
        records.append((c["account_id"].encode(), encode_batch([c]), partition))
    await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)


async def rows_match(database: str, expected: dict) -> bool:
    return not mismatches(expected, await fetch_rows(database, {k[0] for k in expected}))


async def test_shuffled_days_accounts_providers_types_equal_ground_truth(broker, database, tmp_path):
    """A backlog of four days, read by a worker started after it was produced: every row exact,
    the days before today final with no late charge and no revision, today provisional. The
    grace is pinned to the test's start, so this holds at any time of day."""
    now = datetime.now(UTC)
    env = pipeline_env(broker, database, tmp_path / "data", grace=closing_grace(now))
    await ensure_topics(settings_from(env))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        rng = random.Random(3)
        charges = []
        for day in range(4):  # today and the three days before
            for a in range(20):
                for provider in PROVIDERS:
                    for ctype in TYPES:
                        for _ in range(rng.randint(1, 2)):
                            when = now - timedelta(days=day, seconds=rng.randint(0, 3600 * 6))
                            prompt = rng.randint(0, 500)
                            completion = rng.randint(0, 500)
                            charges.append(
                                charge_dict(
                                    f"acct-{a}",
                                    f"user-{a}-{rng.randint(0, 2)}",
                                    provider,
                                    ctype,
                                    when,
                                    prompt,
                                    completion,
                                    cached_tokens=rng.randint(0, prompt),
                                    reasoning_tokens=rng.randint(0, completion),
                                )
                            )
        rng.shuffle(charges)
        expected = ground_truth(charges, ZoneInfo("UTC"))
        assert len(expected) >= 20 * 4 * 3 * 3
        await produce_charges(env, charges)
        worker.start()  # after the backlog: the close must wait for all of it
        await wait_until(
            lambda: rows_match(database, expected),
            90,
            "rows equal to ground truth",
            on_timeout=worker.log_tail,
        )
        today = now.date()
        await wait_until(
            lambda: _final_state(database, today),
            30,
            "past days final, today provisional",
            on_timeout=worker.log_tail,
        )
        rows = await fetch_rows(database)
        assert not mismatches(expected, rows)
        assert all(r["finalized_at"] is None for k, r in rows.items() if k[3] == today)
        assert all(r["revision"] == 0 and r["late_charge_count"] == 0 for r in rows.values())
    finally:
        worker.stop()


async def _final_state(database: str, today) -> bool:
    rows = await fetch_rows(database)
    past = [r for k, r in rows.items() if k[3] < today]
    present = [r for k, r in rows.items() if k[3] == today]
    return (
        bool(past)
        and all(r["finalized_at"] is not None for r in past)
        and all(r["finalized_at"] is None for r in present)
    )


async def test_seed_parity_and_derived_total_and_bad_input_to_dlq(broker, database, tmp_path):
    env, worker = await start_pipeline(broker, database, tmp_path)
    try:
        now = datetime.now(UTC)
        good = [
            charge_dict("parity", "u1", "openai", "completion", now, 10, 10),
            charge_dict("parity", "u1", "openai", "completion", now, 20, 20),
        ]
        derived = charge_dict("derived", "u1", "anthropic", "tool", now, 7, 5)  # no total given
        bad = {
            "total_mismatch": charge_dict("parity", "u1", "openai", "completion", now, 1, 1, total_tokens=5),
            "negative_count": charge_dict("parity", "u1", "openai", "completion", now, -1, 1),
            "naive_timestamp": {
                **charge_dict("parity", "u1", "openai", "completion", now, 1, 1),
                "occurred_at": "2026-11-20T10:00:00",
            },
            "future_timestamp": charge_dict(  # ahead of every clock in the test, pinned or not
                "parity", "u1", "openai", "completion", now + timedelta(days=2), 1, 1
            ),
        }
        records = [(b"parity", encode_batch([good[0]]), None)]
        records += [(b"parity", encode_batch([c]), None) for c in bad.values()]
        records.append((b"parity", b"{not json", None))
        records.append((b"parity", encode_batch([good[1]]), None))
        records.append((b"derived", encode_batch([derived]), None))
        await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)

        expected = ground_truth([*good, derived], ZoneInfo("UTC"))
        await wait_until(
            lambda: rows_match(database, expected), 60, "parity rows", on_timeout=worker.log_tail
        )
        rows = await fetch_rows(database)
        parity = rows[("parity", "u1", "openai", now.date(), "completion")]
        assert (parity["charge_count"], parity["prompt_tokens"], parity["total_tokens"]) == (2, 30, 60)
        assert rows[("derived", "u1", "anthropic", now.date(), "tool")]["total_tokens"] == 12

        letters = await read_dlq(env, expected_count=len(bad) + 1)
        reasons = sorted(json.loads(v)["reason"] for v in letters)
        assert reasons == sorted([*bad, "invalid_json"])
        for raw in letters:
            letter = json.loads(raw)
            assert letter["topic"] == env["BILLING_CHARGES_TOPIC"]
            assert letter["offset"] >= 0 and letter["partition"] >= 0 and letter["payload"]
    finally:
        worker.stop()


async def read_dlq(env: dict[str, str], expected_count: int, timeout: float = 30) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=env["BILLING_KAFKA_BOOTSTRAP"], enable_auto_commit=False)
    await consumer.start()
    try:
        topic = env["BILLING_DLQ_TOPIC"]
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or range(8)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(values) < expected_count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                values.extend(r.value for r in records)
        return values
    finally:
        await consumer.stop()
