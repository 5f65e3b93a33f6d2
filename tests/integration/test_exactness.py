"""Exact whatever the producer, the partitioner, the topic or the broker does.

Every test runs a real `billing worker` against the real broker and Postgres and compares the rows
with ground truth computed from what was produced (tests.support.ground_truth: plain arithmetic).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from confluent_kafka import Producer

from streams.charge.dead_letter import decode as decode_letter
from streams.embedded.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.producer.producer import ChargeProducer
from tests.integration.test_pipeline import read_dlq
from tests.integration.test_safe_cli import billing
from tests.integration.test_sink import refuse_poison
from tests.support import (
    WorkerProcess,
    charge_dict,
    fetch_rows,
    free_port,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
ZONE = ZoneInfo("UTC")


def charges(account: str, n: int, when: datetime, tag: str) -> list[dict[str, Any]]:
    return [
        charge_dict(account, f"u{i % 2}", "openai", "completion", when, 10 + i, 1 + i, event_id=f"{tag}-{i}")
        for i in range(n)
    ]


def librdkafka_send(bootstrap: str, topic: str, items: list[dict[str, Any]]) -> set[int]:
    """Single-charge records through librdkafka with its default partitioner (consistent_random,
    CRC32), as kcat, confluent-kafka, Go, .NET and Node clients send them; the partitions used."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    used: set[int] = set()
    errors: list[Any] = []

    def delivered(err: Any, msg: Any) -> None:
        (errors.append(err) if err else used.add(msg.partition()))

    for c in items:
        producer.produce(topic, json.dumps(c).encode(), key=c["account_id"].encode(), on_delivery=delivered)
    assert producer.flush(30) == 0 and not errors
    return used


async def exact(database: str, produced: list[dict[str, Any]]) -> bool:
    return not mismatches(ground_truth(produced, ZONE), await fetch_rows(database))


async def wait_exact(
    database: str, produced: list[dict[str, Any]], worker: WorkerProcess, timeout: float = 90
) -> None:
    async def check() -> bool:
        return await exact(database, produced)

    def explain() -> str:
        return worker.log_tail()

    await wait_until(check, timeout, "rows equal to ground truth", on_timeout=explain)


async def test_one_account_on_three_partitions_through_three_kinds_of_producer(
    broker, database, tmp_path: Path
):
    env = pipeline_env(broker, database, tmp_path / "data")
    settings = settings_from(env)
    await ensure_topics(settings)
    topic = env["BILLING_CHARGES_TOPIC"]
    now = datetime.now(UTC)
    produced: list[dict[str, Any]] = []
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        ours = charges("acme", 30, now, "lib")
        async with ChargeProducer(settings) as producer:  # murmur2, batched per account
            for c in ours:
                await producer.send(c)
        rdkafka = charges("acme", 30, now, "rdk")
        used = librdkafka_send(broker, topic, rdkafka)  # CRC32: another partition for the same key
        explicit = charges("acme", 10, now, "explicit")
        metas = await produce_raw(
            broker, topic, [(b"acme", json.dumps(c).encode(), i % 3 + 5) for i, c in enumerate(explicit)]
        )
        produced = ours + rdkafka + explicit
        partitions = used | {m.partition for m in metas}
        assert len(partitions) >= 3, partitions  # the account really is spread out
        await wait_exact(database, produced, worker)
        # and the first release's failure mode: the same row fed by small offsets after large ones
        more = charges("acme", 5, now, "late-small-offsets")
        await produce_raw(broker, topic, [(b"acme", json.dumps(c).encode(), 7) for c in more])
        await wait_exact(database, produced + more, worker)
    finally:
        worker.stop()


async def test_a_broker_that_comes_back_empty_and_a_rebuild_that_refuses_to_lose_charges(
    broker, database, tmp_path: Path
):
    """Same topic name on a broker with no records: offsets start over. Nothing is skipped, and
    `billing rebuild` refuses to replace rows whose charges only Postgres still has."""
    env = pipeline_env(broker, database, tmp_path / "data", grace="1s")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    yesterday = datetime.now(UTC) - timedelta(days=1)
    before = charges("acme", 40, yesterday, "before")
    await produce_raw(broker, topic, [(b"acme", json.dumps(c).encode(), None) for c in before])
    worker = WorkerProcess(env, tmp_path / "w1.log").start()
    try:
        await wait_exact(database, before, worker)
    finally:
        worker.stop()
    fresh = EmbeddedBroker(tmp_path / "broker2", "127.0.0.1", free_port())
    await fresh.start()
    try:
        env2 = {**env, "BILLING_KAFKA_BOOTSTRAP": fresh.address}
        await ensure_topics(settings_from(env2))
        after = charges("acme", 5, yesterday, "after") + charges("acme", 5, datetime.now(UTC), "today")
        await produce_raw(fresh.address, topic, [(b"acme", json.dumps(c).encode(), None) for c in after])
        worker = WorkerProcess(env2, tmp_path / "w2.log").start()
        try:
            await wait_exact(database, before + after, worker)
        finally:
            worker.stop()
        day = yesterday.date().isoformat()
        refused = billing(env2, "rebuild", "--from", day, "--to", day, "--no-progress")
        assert refused.returncode != 0, refused.stdout
        assert "no longer has" in refused.stderr and "--drop-source" in refused.stderr, refused.stderr
        assert await exact(database, before + after)  # nothing changed
    finally:
        await fresh.stop()


async def test_time_verdicts_depend_on_the_record_alone(broker, database, tmp_path: Path):
    """A future charge stays refused by a replay and a rebuild; a record stamped in 2025 cannot
    slip a 2025 charge past the late horizon once days are closed."""
    env = pipeline_env(broker, database, tmp_path / "data", grace="1s", late_horizon="10d")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    good = charges("acme", 5, now - timedelta(days=1), "good")
    future = charge_dict(
        "acme", "u", "openai", "completion", now + timedelta(hours=2), 1, 1, event_id="future"
    )
    await produce_raw(broker, topic, [(b"acme", json.dumps(c).encode(), 0) for c in [*good, future]])
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    try:
        await wait_exact(database, good, worker)

        async def closed() -> bool:
            conn = await asyncpg.connect(database)
            try:
                return await conn.fetchval("SELECT closed_through FROM billing_calendar") is not None
            finally:
                await conn.close()

        await wait_until(closed, 60, "yesterday closed", on_timeout=worker.log_tail)
        ancient = datetime(2025, 1, 15, 12, tzinfo=UTC)
        old = charge_dict("acme", "u", "openai", "completion", ancient, 7, 7, event_id="from-2025")
        await produce_raw_at(broker, topic, old, int(ancient.timestamp() * 1000))
        letters = [decode_letter(v) for v in await read_dlq(env, 2, timeout=60)]
        assert sorted(x.reason for x in letters) == ["future_timestamp", "too_late"]
    finally:
        worker.stop()
    day = (now - timedelta(days=1)).date().isoformat()
    for command in (
        [
            "rebuild",
            "--from",
            "2025-01-01",
            "--to",
            (now + timedelta(days=1)).date().isoformat(),
            "--no-progress",
        ],
        ["replay", "--to-offsets", "all:earliest"],
    ):
        done = billing(env, *command)
        assert done.returncode == 0, done.stderr
    worker = WorkerProcess(env, tmp_path / "w2.log").start()
    try:
        # the replay read everything again: the future charge is refused again (a second letter at
        # the same coordinates); the 2025 one lies at or below its source's fence, so it is skipped
        await wait_until(
            lambda: _dlq_count(env, 3), 90, "the replay refused it again", on_timeout=worker.log_tail
        )
        assert await exact(database, good), day  # neither the future nor the 2025 charge counted
    finally:
        worker.stop()


async def _dlq_count(env: dict[str, str], at_least: int) -> bool:
    return len(await read_dlq(env, at_least, timeout=10)) >= at_least


async def produce_raw_at(bootstrap: str, topic: str, charge: dict[str, Any], timestamp_ms: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, json.dumps(charge).encode(), key=b"acme", timestamp_ms=timestamp_ms
        )
    finally:
        await producer.stop()


async def test_no_single_record_stops_the_worker(broker, database, tmp_path: Path):
    """NUL in every identifier, a refused record of 900 kB, and a record Postgres refuses: each
    ends in the DLQ while the worker keeps metering every partition."""
    env = pipeline_env(broker, database, tmp_path / "data")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    await refuse_poison(database, "user_id")
    now = datetime.now(UTC)
    bad: list[tuple[bytes, bytes, int]] = []
    for field in ("event_id", "account_id", "user_id"):
        c = charge_dict("acme", "u", "openai", "completion", now, 1, 1)
        c[field] = "x\u0000y"
        bad.append((c["account_id"].encode(), json.dumps(c).encode(), 1))
    huge = charge_dict("acme", "u", "openai", "completion", now, 1, 1, reference="r" * 900_000)
    bad.append((b"acme", json.dumps(huge).encode(), 2))
    poison = charge_dict("acme", "poison", "openai", "completion", now, 1, 1)
    bad.append((b"acme", json.dumps(poison).encode(), 3))
    good = [charges(f"acct{p}", 6, now, f"g{p}") for p in range(8)]
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    try:
        await produce_raw(broker, topic, bad)
        await produce_raw(
            broker,
            topic,
            [(c["account_id"].encode(), json.dumps(c).encode(), p) for p, cs in enumerate(good) for c in cs],
        )
        flat = [c for cs in good for c in cs]
        await wait_exact(database, flat, worker)
        letters = [decode_letter(v) for v in await read_dlq(env, 5, timeout=60)]
        assert sorted(x.reason for x in letters) == sorted(
            ["control_character"] * 3 + ["too_large", "postgres_refused"]
        )
        big = next(x for x in letters if x.reason == "too_large")
        assert big.truncated and len(big.payload) < 100_000 and big.partition == 2
        assert worker.alive
    finally:
        worker.stop()


async def test_an_operator_can_skip_one_record_and_everything_else_stays_exact(
    broker, database, tmp_path: Path
):
    env = pipeline_env(broker, database, tmp_path / "data")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    kept = charges("acme", 6, now, "kept")
    unwanted = charge_dict("acme", "u", "openai", "completion", now, 999, 999, event_id="unwanted")
    metas = await produce_raw(
        broker, topic, [(b"acme", json.dumps(c).encode(), 2) for c in [*kept[:3], unwanted, *kept[3:]]]
    )
    where = f"{topic}:2:{metas[3].offset}"
    skipped = billing(env, "dlq", "skip", where)
    assert skipped.returncode == 0, skipped.stderr
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    try:
        await wait_exact(database, kept, worker)
        [letter] = [decode_letter(v) for v in await read_dlq(env, 1, timeout=30)]
        assert (letter.reason, letter.partition, letter.offset) == ("skipped", 2, metas[3].offset)
        assert json.loads(letter.payload)["event_id"] == "unwanted"
    finally:
        worker.stop()
    again = billing(env, "dlq", "skip", where)
    assert again.returncode == 1 and "applied already" in again.stderr


async def test_a_cut_over_to_a_new_topic_mid_day_is_exact_and_closed_days_stay_closed(
    broker, database, tmp_path: Path
):
    """The old topic's large offsets never fence the new topic's small ones, and a charge for a
    day that closed before the new topic existed is late there too."""
    env = pipeline_env(broker, database, tmp_path / "data", grace="1s")
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    old = charges("acme", 60, now, "old") + charges("acme", 3, yesterday, "old-y")
    await produce_raw(
        broker, env["BILLING_CHARGES_TOPIC"], [(b"acme", json.dumps(c).encode(), 0) for c in old]
    )
    worker = WorkerProcess(env, tmp_path / "w1.log").start()
    try:
        await wait_exact(database, old, worker)

        async def closed() -> bool:
            rows = await fetch_rows(database)
            return all(r["finalized_at"] is not None for k, r in rows.items() if k[3] == yesterday.date())

        await wait_until(closed, 60, "yesterday closed", on_timeout=worker.log_tail)
    finally:
        worker.stop()
    # the cut-over: a new topic (and consumer group), the same Postgres
    new_env = {
        **env,
        "BILLING_CHARGES_TOPIC": env["BILLING_CHARGES_TOPIC"] + "-v2",
        "BILLING_DLQ_TOPIC": env["BILLING_DLQ_TOPIC"] + "-v2",
        "BILLING_APP_ID": env["BILLING_APP_ID"] + "-v2",
    }
    await ensure_topics(settings_from(new_env))
    new = charges("acme", 5, now, "new")  # offsets 0..4: far below the old topic's fence
    late = charges("acme", 1, yesterday, "new-late")
    await produce_raw(
        broker, new_env["BILLING_CHARGES_TOPIC"], [(b"acme", json.dumps(c).encode(), 0) for c in new + late]
    )
    worker = WorkerProcess(new_env, tmp_path / "w2.log").start()
    try:
        await wait_exact(database, old + new + late, worker)
        rows = await fetch_rows(database)
        past = [r for k, r in rows.items() if k[3] == yesterday.date()]
        assert sum(r["late_charge_count"] for r in past) == 1  # late: its day closed before it arrived
        assert all(r["finalized_at"] is not None for r in past)
    finally:
        worker.stop()
