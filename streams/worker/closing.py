"""Closing billing days: final means no on-time charge can still be waiting.

The rule is `streams.rules.closing`; this module observes the log ends and the applied offsets,
and records a closure in Postgres when the rule allows it.

One clock decides: Postgres' `now()`. It is the clock of the rows' `finalized_at` and of the
dedup horizon, it is shared by every worker (their own clocks may disagree), and the log end is
observed after it was read, so "observed after end + grace" holds whatever the workers' clocks say.

The log end is counted by reading, not taken from the broker's answer alone: the embedded broker
reports the base offset of a partition's last record batch + 1, which misses that batch's other
records. Reading from the reported end - 1 returns the whole batch, whose last offset + 1 is the
true end on both brokers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options
from streams.rules.closing import closing_target, lagging, moved_on
from streams.sink import sql
from streams.sink.postgres import PostgresSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Observation:
    """The ends of every partition, read after end(target) + grace."""

    target: date
    ends: dict[int, int]
    sources: dict[int, int | None]  # a partition's source then: a new incarnation voids the ends


class LogEnds:
    """Reads the true end offset of each partition (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self, topic: str, partitions: list[int], deadline: float = 10.0) -> dict[int, int]:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **aiokafka_options(self.settings), enable_auto_commit=False, auto_offset_reset="earliest"
            )
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        ends = {tp.partition: int(reported[tp]) for tp in tps}
        waiting = {tp for tp in tps if ends[tp.partition] > 0}
        for tp in waiting:
            consumer.seek(tp, ends[tp.partition] - 1)
        loop = asyncio.get_running_loop()
        stop = loop.time() + deadline
        while waiting and loop.time() < stop:
            fetched = await consumer.getmany(*waiting, timeout_ms=500, max_records=10_000)
            for tp, records in fetched.items():
                if records:
                    ends[tp.partition] = max(ends[tp.partition], records[-1].offset + 1)
                    waiting.discard(tp)
        if waiting:  # not read in time: keep the broker's figure, a close only waits longer
            log.debug("log end not confirmed by reading for %s", sorted(tp.partition for tp in waiting))
        return ends

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class DayCloser:
    """Finalizes days once the rule above holds; any worker may run it, Postgres serializes."""

    def __init__(self, settings: Settings, sink: PostgresSink, ends: LogEnds) -> None:
        self.settings = settings
        self.sink = sink
        self.ends = ends
        self.topic = settings.charges_topic
        self.pending: dict[date, Observation] = {}
        self.lag: dict[int, int] = {}  # per partition, from the latest observation

    async def tick(self) -> date | None:
        """Observe the log end for a newly due day, close the latest day whose observation the
        applied offsets now cover; returns the day closed, if any."""
        s = self.settings
        now, closed, applied, sources = await self.sink.run(self._standing)
        target = closing_target(now, s.zone, s.grace, closed)
        if target is not None and target not in self.pending:
            partitions = sorted(applied)
            self.pending[target] = Observation(target, await self.ends.read(self.topic, partitions), sources)
        newest = max(self.pending, default=None)
        for day in sorted(self.pending, reverse=True):
            obs = self.pending[day]
            if moved_on(obs.sources, sources) or (closed is not None and day <= closed):
                del self.pending[day]  # a partition started over (observe again), or closed already
                continue
            behind = lagging(obs.ends, applied)
            if day == newest:
                self.lag = behind
            if not behind and await self.sink.run(functools.partial(self._close, obs=obs)):
                self.pending = {d: o for d, o in self.pending.items() if d > day}
                return day
        return None

    async def _standing(
        self, conn: asyncpg.Connection
    ) -> tuple[datetime, date | None, dict[int, int], dict[int, int | None]]:
        now = await conn.fetchval("SELECT now()")
        closed = await conn.fetchval(sql.READ_CLOSED)
        rows = await conn.fetch(
            "SELECT partition, applied_offset, source_id FROM billing_partitions WHERE topic = $1", self.topic
        )
        return now, closed, {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}

    async def _close(self, conn: asyncpg.Connection, obs: Observation) -> bool:
        async with conn.transaction():
            rows = await conn.fetch(sql.LOCK_ALL_PARTITIONS, self.topic)
            current = await conn.fetchval(sql.LOCK_CALENDAR)
            applied = {r["partition"]: r["applied_offset"] for r in rows}
            sources = {r["partition"]: r["source_id"] for r in rows}
            if (current is not None and obs.target <= current) or moved_on(obs.sources, sources):
                return False
            if lagging(obs.ends, applied):
                return False
            await conn.execute(sql.RECORD_CLOSURE, self.topic, obs.target)
            await conn.execute(sql.SET_CLOSED, obs.target)
            status = await conn.execute(sql.FINALIZE, obs.target)
        standing = ", ".join(f"{p}:{applied[p] + 1}/{obs.ends.get(p, 0)}" for p in sorted(applied))
        log.info(
            "closed billing days through %s: every partition read to its end as observed after the "
            "day's end + grace (partition:applied/end %s); %s rows final",
            obs.target,
            standing,
            status.split()[-1],
            extra={"closed_through": obs.target.isoformat()},
        )
        return True
