"""End to end on the real broker and Postgres: replay and rebuild restore exactly the
ground truth, change nothing else, and refuse bad requests with one line and a non-zero exit.

The commands run as subprocesses (`python -m streams.cli.replay`), the worker as `billing worker`.
Ground truth comes from what the test produced (tests.support.ground_truth), and the expected
replay offsets from the test's own reading of the records' timestamps.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.topics import ensure_topics
from tests.support import (
    ROOT,
    WorkerProcess,
    charge_dict,
    closing_pipeline,
    encode_batch,
    fetch_rows,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    times_on,
    wait_until,
)

pytestmark = pytest.mark.integration
ZONE = ZoneInfo("UTC")
PARTITIONS = 4
PROVIDERS = ("openai", "anthropic", "googleai")


def make_charges(
    rng: random.Random, accounts: list[str], days: list[date], per_key: int, now: datetime
) -> list[dict]:
    """A few charges per (account, user, provider, day); times in the first hours of each day,
    none after `now`."""
    out = []
    for account in accounts:
        for day in days:
            for provider in PROVIDERS:
                for _ in range(rng.randint(1, per_key)):
                    [when] = times_on(day, now, rng)
                    prompt, completion = rng.randint(1, 900), rng.randint(0, 300)
                    user = f"{account}-u{rng.randint(0, 1)}"
                    out.append(
                        charge_dict(
                            account,
                            user,
                            provider,
                            "completion",
                            when,
                            prompt,
                            completion,
                            cached_tokens=rng.randint(0, prompt),
                            reasoning_tokens=rng.randint(0, completion),
                        )
                    )
    rng.shuffle(out)
    return out


def as_records(charges: list[dict]) -> list[tuple[bytes, bytes, None]]:
    """Single-charge records and small same-account batches, as real producers send them."""
    records, i = [], 0
    while i < len(charges):
        group = [charges[i]]
        while (
            len(group) < 3
            and i + len(group) < len(charges)
            and charges[i + len(group)]["account_id"] == group[0]["account_id"]
        ):
            group.append(charges[i + len(group)])
        records.append((group[0]["account_id"].encode(), encode_batch(group), None))
        i += len(group)
    return records


async def produce(env: dict[str, str], charges: list[dict]) -> int:
    records = as_records(charges)
    await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)
    return len(records)


async def read_stamps(env: dict[str, str], expected: int) -> dict[int, list[int]]:
    """Every record's timestamp per partition (index = offset), read by the test itself."""
    topic = env["BILLING_CHARGES_TOPIC"]
    consumer = AIOKafkaConsumer(bootstrap_servers=env["BILLING_KAFKA_BOOTSTRAP"], enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        stamps: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        deadline = asyncio.get_running_loop().time() + 30
        while sum(map(len, stamps.values())) < expected and asyncio.get_running_loop().time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for r in records:
                    assert r.offset == len(stamps[tp.partition])
                    stamps[tp.partition].append(r.timestamp)
        assert sum(map(len, stamps.values())) == expected
        return stamps
    finally:
        await consumer.stop()


async def committed(env: dict[str, str]) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=env["BILLING_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        tps = [TopicPartition(env["BILLING_CHARGES_TOPIC"], p) for p in range(PARTITIONS)]
        answer = await admin.list_consumer_group_offsets(env["BILLING_APP_ID"], partitions=tps)
        return {tp.partition: answer[tp].offset for tp in tps}
    finally:
        await admin.close()


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streams.cli.replay", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


async def rows_equal_truth(database: str, expected: dict) -> bool:
    return not mismatches(expected, await fetch_rows(database))


async def start(
    broker: str, database: str, tmp_path: Path, now: datetime
) -> tuple[dict[str, str], WorkerProcess]:
    # The days before `now`'s date close at once and no other closes during the test, whatever
    # the time of day (even across midnight).
    env = await closing_pipeline(broker, database, tmp_path / "data", now, PARTITIONS)
    return env, WorkerProcess(env, tmp_path / "worker.log").start()


async def past_days_final(database: str, today: date) -> bool:
    """Days before the test's today are closed, so the worker's day closure changes no row any more."""
    rows = (await fetch_rows(database)).values()
    return all(r["finalized_at"] is not None for r in rows if r["date"] < today)


async def caught_up(env: dict[str, str], ends: dict[int, int]) -> bool:
    return await committed(env) == ends


BACKED_UP = (  # in the order of their foreign keys
    "daily_billing_records",
    "billing_sources",
    "billing_partitions",
    "billing_source_closures",
    "billing_dedup",
    "billing_calendar",
)


async def backup(database: str) -> None:
    """A consistent copy of everything the sink keeps, as a backup tool would take it."""
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            for table in BACKED_UP:
                await conn.execute(f"CREATE TABLE backup_{table} AS SELECT * FROM {table}")
    finally:
        await conn.close()


async def restore(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            await conn.execute(f"TRUNCATE {', '.join(BACKED_UP)} CASCADE")
            for table in BACKED_UP:
                await conn.execute(f"INSERT INTO {table} SELECT * FROM backup_{table}")
    finally:
        await conn.close()


async def test_replay_restores_a_backup_from_a_timestamp_and_never_double_counts(broker, database, tmp_path):
    now = datetime.now(UTC)
    env, worker = await start(broker, database, tmp_path, now)
    rng = random.Random(5)
    today = now.date()
    days = [today - timedelta(days=2), today - timedelta(days=1), today]
    try:
        before = make_charges(rng, [f"old-{i}" for i in range(8)], days, 3, now)
        records = await produce(env, before)
        await wait_until(
            lambda: rows_equal_truth(database, ground_truth(before, ZONE)),
            60,
            "phase A rows",
            on_timeout=worker.log_tail,
        )
        await backup(database)  # what an operator's nightly backup holds: rows and fences together
        # The moment to replay from, on the records' own clock (the producer's timestamps):
        # half a second after the last record of phase A, a second before the first of phase B.
        last = max(max(s, default=0) for s in (await read_stamps(env, records)).values())
        moment = datetime.fromtimestamp(last / 1000 + 0.5, UTC)
        await asyncio.sleep(1.0)
        after = make_charges(rng, [f"new-{i}" for i in range(8)], days, 3, now)
        after += make_charges(rng, [f"old-{i}" for i in range(3)], [today], 2, now)  # new charges, old rows
        resent = [dict(c) for c in rng.sample(before, 10) + rng.sample(after, 10)]  # same event_ids
        everything = before + after + resent
        truth = ground_truth(everything, ZONE)
        records += await produce(env, after + resent)
        await wait_until(
            lambda: rows_equal_truth(database, truth), 60, "all rows", on_timeout=worker.log_tail
        )
        stamps = await read_stamps(env, records)
        ends = {p: len(s) for p, s in stamps.items()}
        await wait_until(lambda: caught_up(env, ends), 30, "offsets committed")

        # Refusals: one line, non-zero, nothing changed (the worker is live, so it would notice).
        later = (datetime.now(UTC) + timedelta(days=2)).isoformat()  # ahead of any clock in the test
        one_line_error(await cli(env, "replay", "--from-timestamp", later), "in the future")
        one_line_error(await cli(env, "replay", "--to-offsets", f"0:{ends[0] + 5}"), "beyond the end")
        one_line_error(await cli(env, "replay", "--to-offsets", "0:0,9:0"), "unknown partition(s) 9")
        one_line_error(await cli(env, "replay", "--to-offsets", "bogus"), "expected PARTITION:OFFSET")
        one_line_error(await cli(env, "replay", "--to-offsets", "all:0"), "live member", "faust")
        assert await committed(env) == ends
        assert worker.alive

        worker.stop()
        snapshot = await fetch_rows(database)
        assert not mismatches(truth, snapshot)
        await restore(database)  # Postgres lost everything since the backup
        touched = set(ground_truth(after + resent, ZONE))

        # Dry run: per partition the committed and the new offset and the records between.
        expected_new = {
            p: next((i for i, t in enumerate(s) if t >= moment.timestamp() * 1000), len(s))
            for p, s in stamps.items()
        }
        assert any(0 < n < ends[p] for p, n in expected_new.items())  # a real boundary, not 0
        dry = await cli(env, "replay", "--from-timestamp", moment.isoformat(), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        table = [line.split() for line in dry.stdout.splitlines()[2:] if line[:1].isdigit()]
        assert {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in table} == {
            p: (ends[p], expected_new[p], ends[p] - expected_new[p]) for p in range(PARTITIONS)
        }
        assert await committed(env) == ends

        result = await cli(env, "replay", "--from-timestamp", moment.isoformat())
        assert result.returncode == 0, result.stdout + result.stderr
        assert await committed(env) == expected_new
        worker = WorkerProcess(env, tmp_path / "worker2.log").start()
        await wait_until(
            lambda: rows_equal_truth(database, truth), 60, "restored rows", on_timeout=worker.log_tail
        )
        await wait_until(lambda: caught_up(env, ends), 30, "replay committed")
        restored = await fetch_rows(database)

        # Rows phase B did not touch are as they were, every column but the closing time: the
        # backup predates the close of their day, which happened again after the restore.
        def stable(rows: dict) -> dict:
            return {
                k: {**v, "finalized_at": v["finalized_at"] is not None, "updated_at": None}
                for k, v in rows.items()
                if k not in touched
            }

        assert stable(restored) == stable(snapshot)

        # Replay everything with all rows present: nothing may change, not even updated_at.
        worker.stop()
        result = await cli(env, "replay", "--to-offsets", "all:0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert await committed(env) == dict.fromkeys(range(PARTITIONS), 0)
        worker = WorkerProcess(env, tmp_path / "worker3.log").start()
        await wait_until(
            lambda: caught_up(env, ends), 60, "full replay committed", on_timeout=worker.log_tail
        )
        assert await fetch_rows(database) == restored
    finally:
        worker.stop()


async def test_rebuild_restores_exactly_the_corrupted_day_while_the_worker_runs(
    broker, database, tmp_path, monkeypatch
):
    now = datetime.now(UTC)
    env, worker = await start(broker, database, tmp_path, now)
    rng = random.Random(11)
    today = now.date()
    d0, d1, d2 = (today - timedelta(days=n) for n in (3, 2, 1))
    try:
        charges = make_charges(rng, [f"acct-{i}" for i in range(10)], [d0, d1, d2], 3, now)
        records = await produce(env, charges)
        charges += [dict(c) for c in rng.sample(charges, 12)]  # re-sent: the rebuild must dedup too
        records += await produce(env, charges[-12:])
        await wait_until(
            lambda: rows_equal_truth(database, ground_truth(charges, ZONE)),
            60,
            "rows",
            on_timeout=worker.log_tail,
        )
        await wait_until(
            lambda: past_days_final(database, today), 90, "past days final", on_timeout=worker.log_tail
        )
        rows = await fetch_rows(database)
        on = {d: sorted(k for k in rows if k[3] == d) for d in (d0, d1, d2)}
        conn = await asyncpg.connect(database)
        try:  # a bad hand edit of day d1, and of one row on each side of it
            for key in [*on[d1][:5], on[d0][0], on[d2][-1]]:
                await conn.execute(
                    "UPDATE daily_billing_records SET prompt_tokens = prompt_tokens + 7, charge_count = 0"
                    " WHERE id = $1",
                    rows[key]["id"],
                )
            assert on[d1][-1][0] == "acct-9"  # the rebuild must insert it: no extra charges for it below
            await conn.execute("DELETE FROM daily_billing_records WHERE id = $1", rows[on[d1][-1]]["id"])
            await conn.execute(
                "INSERT INTO daily_billing_records (account_id, user_id, provider, date, charge_type,"
                " prompt_tokens) VALUES ('ghost', 'g', 'openai', $1, 'completion', 5)",
                d1,
            )
        finally:
            await conn.close()
        outside = {k: v for k, v in (await fetch_rows(database)).items() if k[3] != d1}

        # More charges for d1 and today arrive while the rebuild runs.
        extra = make_charges(rng, [f"acct-{i}" for i in range(4)], [d1, today], 2, now)
        producing = asyncio.create_task(produce(env, extra))
        result = await cli(env, "rebuild", "--from", str(d1), "--to", str(d1))
        records += await producing
        assert result.returncode == 0, result.stdout + result.stderr
        summary = result.stdout.strip().splitlines()[-1]
        assert summary.startswith(f"rebuilt {d1} from ") and ", 1 deleted," in summary, summary
        inserted, updated = (
            int(summary.split(" inserted")[0].split()[-1]),
            int(summary.split(" updated")[0].split()[-1]),
        )
        assert inserted >= 1 and updated >= 5, summary

        truth = ground_truth(charges + extra, ZONE)
        wanted_d1 = {k: v for k, v in truth.items() if k[3] in (d1, today)}
        await wait_until(
            lambda: _rows_match(database, wanted_d1, (d1, today)),
            60,
            "day d1 rebuilt",
            on_timeout=worker.log_tail,
        )
        after = await fetch_rows(database)
        assert {k: v for k, v in after.items() if k[3] in (d0, d2)} == {
            k: v for k, v in outside.items() if k[3] in (d0, d2)
        }  # other days untouched, their hand edits included

        # Idempotent: once the worker has caught up, a second rebuild finds nothing to change.
        again = await cli(env, "rebuild", "--from", str(d1), "--to", str(d1))
        assert again.returncode == 0 and " 0 inserted, 0 updated, 0 deleted," in again.stdout, again.stdout
        one_line_error(await cli(env, "rebuild", "--from", str(d2), "--to", str(d1)), "is after")

        # The worker got further than the rebuild's own read: the tail is read under the lock.
        import streams.ops.rebuild as rb

        ends = {p: len(s) for p, s in (await read_stamps(env, records)).items()}
        real_read, starts = rb.read_topic, []

        def read_half_first(settings, topic, start=None, stop=None, **kwargs):
            starts.append(start)
            if start is None:  # the unlocked read: pretend it stopped halfway
                stop = {p: e // 2 for p, e in ends.items()}
            return real_read(settings, topic, start, stop, **kwargs)

        monkeypatch.setattr(rb, "read_topic", read_half_first)
        await _zero_day(database, d1)
        outcome = await rb.rebuild(settings_from(env), d1, d1)
        assert starts == [None, {p: e // 2 for p, e in ends.items()}], starts
        day_d1 = {k: v for k, v in wanted_d1.items() if k[3] == d1}
        assert (outcome.updated, outcome.inserted, outcome.deleted) == (len(day_d1), 0, 0)
        assert await _rows_match(database, day_d1, (d1,))
    finally:
        worker.stop()


async def _zero_day(database: str, day: date) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE daily_billing_records SET prompt_tokens = 0 WHERE date = $1", day)
    finally:
        await conn.close()


async def _rows_match(database: str, expected: dict, days: tuple[date, ...]) -> bool:
    rows = {k: v for k, v in (await fetch_rows(database)).items() if k[3] in days}
    return not mismatches(expected, rows)


async def test_retention_check_warns_about_short_retention(broker, tmp_path):
    from aiokafka.admin import NewTopic

    from streams.kafka.retention import check_retention

    env = pipeline_env(broker, "postgresql://unused/none", tmp_path / "data", partitions="1")
    settings = settings_from(env)
    await ensure_topics(settings)
    assert await check_retention(settings) == []  # created with retention.ms=-1
    short = settings.model_copy(update={"charges_topic": settings.charges_topic + "-short"})
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(short.charges_topic, 1, 1, topic_configs={"retention.ms": "86400000"})]
        )
    finally:
        await admin.close()
    warnings = await check_retention(short)
    assert len(warnings) == 1 and "retention.ms=86400000" in warnings[0], warnings


async def test_timestamp_replay_bisects_where_the_broker_answers_wrong(broker, tmp_path):
    """Records stamped an hour ago but appended now: Tansu answers `offsets_for_times` by append
    time (offset 0), the check against the records rejects that, and bisection finds the first
    record at or after T, the first of equal stamps included."""
    from aiokafka import AIOKafkaProducer

    env = pipeline_env(
        broker, "postgresql://unused/none", tmp_path / "data", partitions="2", dedup_horizon="30m"
    )
    settings = settings_from(env)
    await ensure_topics(settings)
    topic = settings.charges_topic
    base = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for i in range(40):
            await producer.send_and_wait(topic, b"{}", key=b"k", partition=0, timestamp_ms=base + i * 1000)
            await producer.send_and_wait(
                topic, b"{}", key=b"k", partition=1, timestamp_ms=base + i // 4 * 1000
            )
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(bootstrap_servers=broker, group_id=settings.app_id, enable_auto_commit=False)
    await group.start()
    try:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        group.assign(tps)
        await group.commit(dict.fromkeys(tps, 40))
    finally:
        await group.stop()
    moment = datetime.fromtimestamp((base + 5000) / 1000, UTC).isoformat()
    dry = await cli(env, "replay", "--from-timestamp", moment, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    table = {int(r[0]): r[1:] for r in (line.split() for line in dry.stdout.splitlines()[2:]) if r}
    assert table == {0: ["40", "5", "35", "bisect"], 1: ["40", "20", "20", "bisect"]}, dry.stdout
    assert "older than BILLING_DEDUP_HORIZON" in dry.stderr  # an hour back, the horizon is 30 m
