"""When the group has caught up: committed offsets at the log end, every worker idle.

The log end is counted by reading: the embedded broker reports the base offset of a partition's
last record batch + 1, so the reported end is only where reading starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition


async def log_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        ends = {tp.partition: int(reported[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp.partition] - 1))
        quiet = 0
        while quiet < 3:  # read until three fetches in a row bring nothing
            fetched = await consumer.getmany(timeout_ms=300, max_records=10_000)
            quiet = 0 if any(fetched.values()) else quiet + 1
            for tp, records in fetched.items():
                if records:
                    ends[tp.partition] = max(ends[tp.partition], records[-1].offset + 1)
        return ends
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (-1 where none), read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = -1 if offset is None else int(offset)
        return out
    finally:
        await consumer.stop()


async def fingerprint(database: str, topic: str) -> tuple[Any, ...]:
    """What a flush or a close would change: totals, revisions, fences, closures."""
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT (count(*), sum(charge_count), sum(late_charge_count), sum(revision),
                               max(updated_at))::text FROM daily_billing_records),
                      (SELECT sum(applied_offset)::text FROM billing_partitions WHERE topic = $1),
                      (SELECT count(*) FROM billing_source_closures)""",
            topic,
        )
        return tuple(row)
    finally:
        await conn.close()


async def caught_up(
    bootstrap: str,
    group: str,
    database: str,
    topic: str,
    partitions: int,
    log_sizes: Callable[[], dict[str, int]],
    idle_seconds: float,
    timeout: float,
    on_wait: Callable[[], Awaitable[None]] | None = None,
) -> dict[int, int]:
    """Wait (up to `timeout`) until every partition's committed offset is its log end and then
    no worker log and nothing in Postgres changed for `idle_seconds`; returns the log ends."""
    deadline = time.monotonic() + timeout
    ends = await log_ends(bootstrap, topic, partitions)
    while True:
        offsets = await committed(bootstrap, group, topic, partitions)
        behind = {p: (offsets[p], end) for p, end in ends.items() if end > 0 and offsets[p] != end}
        if not behind:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"group not caught up (partition: committed, end): {behind}")
        if on_wait:
            await on_wait()
        await asyncio.sleep(1.0)
    state, quiet_since = None, time.monotonic()
    while time.monotonic() - quiet_since < idle_seconds:
        now = (log_sizes(), await fingerprint(database, topic))
        if now != state:
            state, quiet_since = now, time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers never stayed idle for {idle_seconds:.0f}s")
        await asyncio.sleep(0.5)
    return ends
