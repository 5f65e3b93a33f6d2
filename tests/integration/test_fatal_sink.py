"""A Postgres error that retrying cannot fix stops the worker loudly, and loses nothing.

The daily rows' table disappears under a running worker (as when the schema was dropped or a
migration went wrong): Postgres answers every flush with an error that is neither transient
(a new connection does not cure it) nor caused by a record (SQLSTATE 42P01, not class 22/23).
Retrying forever would hide it and dead-lettering the batch would skip charges, so the worker
must exit non-zero with a line naming the error, without acknowledging what it did not commit;
once the table is back, a new worker counts every charge exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from streams.kafka.topic_reader import read_topic
from streams.kafka.topics import ensure_topics
from tests.faults.catchup import committed, log_ends
from tests.integration.test_guarantees import _charges, _records
from tests.integration.test_pipeline import rows_match
from tests.support import (
    WorkerProcess,
    closing_grace,
    ground_truth,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
FATAL_EXIT = 3  # `billing worker` stopped on a fatal error (docs/operations.md)


async def fences(database: str, topic: str) -> dict[int, int]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT partition, applied_offset FROM billing_partitions WHERE topic = $1", topic
        )
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


async def rename_rows_table(database: str, old: str, new: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"ALTER TABLE {old} RENAME TO {new}")  # fixed names, nothing bound
    finally:
        await conn.close()


async def test_a_missing_table_stops_the_worker_loudly_and_loses_nothing(broker, database, tmp_path: Path):
    now = datetime.now(UTC)
    env = pipeline_env(broker, database, tmp_path / "data", grace=closing_grace(now))
    settings = settings_from(env)
    await ensure_topics(settings)
    bootstrap, topic, partitions = settings.kafka_bootstrap, settings.charges_topic, settings.partitions
    before = _charges("fatal-a", 30, now) + _charges("fatal-b", 30, now)
    after = _charges("fatal-a", 30, now, start=100) + _charges("fatal-b", 30, now, start=100)
    await produce_raw(bootstrap, topic, _records(before, 4))

    doomed = WorkerProcess(env, tmp_path / "doomed.log").start()
    try:
        await wait_until(
            lambda: rows_match(database, ground_truth(before, ZoneInfo("UTC"))),
            90,
            "the first charges counted",
            on_timeout=doomed.log_tail,
        )
        held = await fences(database, topic)
        await rename_rows_table(database, "daily_billing_records", "daily_billing_records_away")
        await produce_raw(bootstrap, topic, _records(after, 4))

        async def exited() -> bool:
            return not doomed.alive

        await wait_until(exited, 90, "the worker to stop on the fatal error", on_timeout=doomed.log_tail)
    finally:
        doomed.kill()
    assert doomed.proc is not None and doomed.proc.returncode == FATAL_EXIT, doomed.log_tail()
    log = doomed.log_path.read_text()
    assert (
        "stopping the worker, batch left unacknowledged: postgres rejected the write: UndefinedTableError"
        in log
    )
    assert "billing worker: stopped on a fatal error (SinkFatalError)" in log

    # Nothing of the failed batch was applied, and the group's committed offsets stay at or
    # below what Postgres holds: a new worker reads the unapplied records again.
    assert await fences(database, topic) == held
    ends = await log_ends(bootstrap, topic, partitions)
    assert sum(ends.values()) > sum(f + 1 for f in held.values())  # the later records are unapplied
    group = await committed(bootstrap, settings.app_id, topic, partitions)
    assert all(group[p] <= held[p] + 1 for p in range(partitions)), (group, held)
    letters = [r async for records in read_topic(settings, settings.dlq_topic, settle=0.5) for r in records]
    assert letters == []  # the charges were not dead-lettered as if a record were to blame

    await rename_rows_table(database, "daily_billing_records_away", "daily_billing_records")
    survivor = WorkerProcess(env, tmp_path / "survivor.log").start()
    try:
        await wait_until(
            lambda: rows_match(database, ground_truth(before + after, ZoneInfo("UTC"))),
            90,
            "every charge counted once after the fix",
            on_timeout=survivor.log_tail,
        )
    finally:
        survivor.stop()
