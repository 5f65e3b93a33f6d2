"""The Postgres sink: one transaction per flush makes every charge count exactly once.

Why Postgres holds the fences, not a Faust table: the effect must be durable where people read
it. Each flush adds the batch's charges to their rows and moves the per-key and per-partition
fences in the same transaction, so a crash at any point leaves either all of a flush or none of
it. Kafka offsets are acknowledged only after the commit; whatever is replayed after a crash,
rebalance or `billing replay` is filtered by the fences and the event_id dedup inside SQL.

Transient errors (Postgres down, restarting, a dropped connection) are retried with capped
exponential backoff while the worker holds its batch; anything else is fatal and raised, so the
worker stops loudly instead of skipping data.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypeVar

import asyncpg

from streams import crashpoints, metrics_sql
from streams import sink_sql as sql
from streams.aggregate import Batch
from streams.config import Settings
from streams.settle import RowDelta, Settlement, closures_by_partition, first_sightings, settle
from streams.watermark import PartitionProgress, closed_through, watermark

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


class SinkFatalError(RuntimeError):
    """Postgres refused the write for a reason retrying cannot fix (schema, rights, data)."""


@dataclass(frozen=True, slots=True)
class FlushResult:
    charges: int
    duplicates: int
    rows_written: int
    seconds: float
    late: int = 0  # charges added to an already-final day (counted for metrics only)

    @classmethod
    def total(cls, results: list[FlushResult]) -> FlushResult:
        """One result for shares of a batch committed side by side (the slowest one's time)."""
        return cls(
            sum(r.charges for r in results),
            sum(r.duplicates for r in results),
            sum(r.rows_written for r in results),
            max(r.seconds for r in results),
            sum(r.late for r in results),
        )


def _delta_row(d: RowDelta) -> tuple[object, ...]:
    """A delta in the column order of `sql.DELTA_COLUMNS`."""
    return (*d.key, *d.sums, d.charge_count, d.late_charge_count, d.partition, d.last_offset)


class PostgresSink:
    """Writes batches and closes days; safe to share between the agent and the timers."""

    def __init__(
        self,
        settings: Settings,
        on_retry: Callable[[BaseException, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.charges_topic
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._on_retry = on_retry
        self._stopped = False
        # More connections, each flushing its share of a batch's partitions at the same time.
        self._lanes: list[PostgresSink] = []

    @property
    def connected(self) -> bool:
        """True while the sink holds an open Postgres connection (what /ready reports)."""
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect now (retrying while Postgres is unreachable) rather than at the first flush."""

        async def noop(conn: asyncpg.Connection) -> None:
            return None

        await self._run(noop)
        lanes = [
            PostgresSink(self.settings, self._on_retry) for _ in range(self.settings.sink_connections - 1)
        ]
        for lane in lanes:
            await lane._run(noop)
        self._lanes = lanes

    async def stop(self) -> None:
        self._stopped = True
        for lane in self._lanes:
            await lane.stop()
        if self._conn is not None:
            await self._conn.close(timeout=5)
            self._conn = None

    async def flush(self, batch: Batch) -> FlushResult:
        """Make the batch durable; returns only once all of it is committed.

        With several connections the batch's partitions are shared out and each share commits
        in its own transaction. Should one fail, the others may have committed: the batch stays
        unacknowledged and its replay finds their charges fenced off, so nothing counts twice.
        """
        lanes = [self, *self._lanes]
        parts = batch.split(len(lanes))
        if len(parts) == 1:
            return await self._flush(batch)
        outcomes = await asyncio.gather(
            *(lane._flush(part) for lane, part in zip(lanes, parts, strict=False)), return_exceptions=True
        )
        done = [o for o in outcomes if isinstance(o, FlushResult)]
        if len(done) < len(outcomes):  # every share has finished: now report the failure
            raise next(o for o in outcomes if isinstance(o, BaseException))
        return FlushResult.total(done)

    async def _flush(self, batch: Batch) -> FlushResult:
        if batch.empty:
            return FlushResult(0, 0, 0, 0.0)
        partitions = sorted(batch.marks)
        marks = [batch.marks[p] for p in partitions]

        async def write(conn: asyncpg.Connection) -> FlushResult:
            started = asyncio.get_running_loop().time()
            async with conn.transaction():
                locked = await conn.fetch(sql.LOCK_PARTITIONS, self.topic, partitions)
                if len(locked) != len(partitions):
                    raise SinkFatalError(
                        f"partitions {partitions} of {self.topic!r} are not all known to the sink; "
                        f"does BILLING_PARTITIONS ({self.settings.partitions}) match the topic?"
                    )
                await self._check_incarnation(conn, locked, batch)
                closed = await conn.fetchval(sql.READ_CLOSED, self.topic)
                written = late = duplicates = 0
                if batch.rows:
                    await conn.execute(sql.PLAN_FOR_BATCH)
                    settled = await self._settle(conn, batch, partitions)
                    written, late, duplicates = len(settled.deltas), settled.late, settled.duplicates
                    if settled.deltas:
                        deltas = sorted(map(_delta_row, settled.deltas))  # index order, as above
                        columns = zip(*deltas, strict=True)
                        await conn.execute(sql.UPSERT, *map(list, columns), closed)
                crashpoints.reached("inside_flush_transaction")
                await conn.execute(
                    sql.ADVANCE,
                    self.topic,
                    partitions,
                    [m.max_offset for m in marks],
                    [m.max_event_time for m in marks],
                    [m.charges > 0 for m in marks],
                )
            elapsed = asyncio.get_running_loop().time() - started
            return FlushResult(len(batch.rows), int(duplicates), int(written), elapsed, int(late))

        return await self._run(write)

    async def _settle(self, conn: asyncpg.Connection, batch: Batch, partitions: list[int]) -> Settlement:
        """Read what Postgres knows about the batch's charges and apply the rules to them."""
        sightings = first_sightings(batch.rows)
        ids = sorted(sightings)  # in index order: a B-tree takes sorted inserts far faster
        seen = [ids, *map(list, zip(*(sightings[i] for i in ids), strict=True))]
        if await conn.fetchval(sql.RECORD_SEEN, *seen) < len(ids):  # seen before: those count
            for r in await conn.fetch(sql.SEEN_ELSEWHERE, *seen):
                sightings[r[0]] = (r[1], r[2], r[3])
        keys = sorted({row[4:9] for row in batch.rows})
        found = await conn.fetch(sql.FENCES, *map(list, zip(*keys, strict=True)))
        fences = {tuple(r[:5]): r[5] for r in found}
        first_day = min(row[7] for row in batch.rows)
        closures = closures_by_partition(await conn.fetch(sql.CLOSURES, self.topic, partitions, first_day))
        return settle(batch.rows, sightings, fences, closures)

    async def _check_incarnation(self, conn: asyncpg.Connection, locked: list, batch: Batch) -> None:
        """Reset a partition's fences when its offset 0 now holds a different record."""
        stored = {r["partition"]: r["first_record"] for r in locked}
        for partition, mark in batch.marks.items():
            fingerprint = mark.first_record
            if fingerprint is None or stored.get(partition) == fingerprint:
                continue
            if stored.get(partition) is None:
                await conn.execute(sql.SET_FIRST_RECORD, self.topic, partition, fingerprint)
                continue
            log.warning(
                "partition %d of %s starts over at offset 0 with another record (topic recreated or "
                "broker restarted empty): resetting its offset fences",
                partition,
                self.topic,
            )
            await conn.execute(sql.RESET_PARTITION_ROWS, partition)
            await conn.execute(sql.RESET_PARTITION_SEEN, partition)
            await conn.execute(sql.RESET_PARTITION, self.topic, partition, fingerprint)

    async def close_days(self, now: datetime | None = None) -> date | None:
        """Finalize the days the watermark (or the wall clock) has passed; returns closed_through."""
        s = self.settings
        now = now or datetime.now(UTC)

        async def close(conn: asyncpg.Connection) -> date | None:
            async with conn.transaction():
                rows = await conn.fetch(sql.LOCK_ALL_PARTITIONS, self.topic)
                current = await conn.fetchval(sql.LOCK_STATE, self.topic)
                progress = [
                    PartitionProgress(r["partition"], r["max_event_time"], r["last_event_at"]) for r in rows
                ]
                mark = watermark(progress, now, s.idle_timeout)
                target = closed_through(mark, now, s.zone, s.grace, s.idle_timeout, current)
                if target is not None and target != current:
                    await conn.execute(sql.RECORD_CLOSURE, self.topic, target)
                    await conn.execute(sql.SET_CLOSED, self.topic, target)
                    status = await conn.execute(sql.FINALIZE, target)
                    log.info(
                        "closed billing days through %s (watermark %s): %s rows final",
                        target,
                        mark.isoformat() if mark else "none (idle)",
                        status.split()[-1],
                    )
                return target

        return await self._run(close)

    async def purge_seen(self) -> int:
        """Forget idempotency keys older than BILLING_DEDUP_HORIZON."""

        async def purge(conn: asyncpg.Connection) -> int:
            status = await conn.execute(sql.PURGE_SEEN, self.settings.dedup_horizon)
            return int(status.split()[-1])

        return await self._run(purge)

    async def day_status(self) -> tuple[int, date | None]:
        """(billing days with provisional rows, closed_through) for the metrics."""

        async def read(conn: asyncpg.Connection) -> tuple[int, date | None]:
            open_days = await conn.fetchval(metrics_sql.OPEN_DAYS)
            return int(open_days), await conn.fetchval(sql.READ_CLOSED, self.topic)

        return await self._run(read)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self.settings.dsn, timeout=10)
            # The bookkeeping rows every flush locks; cheap and idempotent, so on every connect.
            await conn.execute(sql.ENSURE_PARTITIONS, self.topic, self.settings.partitions)
            await conn.execute(sql.ENSURE_STATE, self.topic)
            self._conn = conn
        return self._conn

    async def _run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `operation` until it succeeds; transient failures wait and retry, others raise."""
        attempt = 0
        cap = self.settings.pg_retry_max_backoff.total_seconds()
        async with self._lock:
            while True:
                try:
                    return await operation(await self._connection())
                except TRANSIENT as exc:
                    attempt += 1
                    await self._drop_connection()
                    if self._stopped:
                        raise
                    delay = min(cap, 0.2 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
                    log.warning(
                        "postgres unavailable (%s); retry %d in %.1fs, holding the batch",
                        type(exc).__name__,
                        attempt,
                        delay,
                    )
                    if self._on_retry:
                        self._on_retry(exc, attempt)
                    await asyncio.sleep(delay)
                except SinkFatalError:
                    raise
                except asyncpg.PostgresError as exc:
                    raise SinkFatalError(f"postgres rejected the write: {type(exc).__name__}: {exc}") from exc

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
