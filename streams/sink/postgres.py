"""The Postgres sink: one transaction per flush makes every charge count exactly once.

Why Postgres holds the fences, not a Faust table: the effect must be durable where people read
it. Each flush adds the batch's charges to their rows, records the winners of their idempotency
keys and moves the fences of their sources in the same transaction, so a crash at any point
leaves either all of a flush or none of it. Kafka offsets are acknowledged only after the
commit; whatever is read again after a crash, a rebalance or `billing replay` lies at or below
its source's fence and is skipped. docs/architecture.md has the whole argument.

Every operation runs on a `RetryingConnection` (`streams.sink.connection`): a transient failure is
retried on a fresh connection while the worker holds its batch, a refused value is blamed on a
record, and anything else stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TypeVar

import asyncpg

from streams import crashpoints
from streams.config.settings import Settings
from streams.errors import SinkFatalError
from streams.rules.batch import Batch
from streams.rules.pending import Coordinates, PendingCharge
from streams.rules.price_book import Pricing
from streams.rules.settle import admit, closure_marks, first_sightings, horizon_days, settle
from streams.sink import sql
from streams.sink.connection import RetryingConnection
from streams.sink.prices import PriceCache
from streams.sink.rows import FlushResult, days_by_partition, staging_records

log = logging.getLogger(__name__)
T = TypeVar("T")
Refuse = Callable[[list[PendingCharge]], Awaitable[None]]


class _TooLate(Exception):
    """Inside a flush: these charges must be dead-lettered before the batch can commit."""

    def __init__(self, charges: list[PendingCharge]) -> None:
        super().__init__(f"{len(charges)} charges too late")
        self.charges = charges


class PostgresSink(RetryingConnection):
    """Writes batches (and runs the day closer's transactions); safe to share between the agent
    and the timers: one operation at a time per connection."""

    def __init__(
        self,
        settings: Settings,
        on_retry: Callable[[BaseException, int], None] | None = None,
    ) -> None:
        super().__init__(settings, on_retry)
        self.topic = settings.charges_topic
        # More connections, each flushing its share of a batch's partitions at the same time.
        self._lanes: list[PostgresSink] = []
        self._horizon_days = horizon_days(settings.late_horizon.total_seconds())
        self._legacy_ledger = True  # until a connection finds the pre-upgrade ledger empty
        self._prices = PriceCache()  # shared with the lanes

    @property
    def healthy(self) -> bool:
        """Connected, and no write of this sink (or its lanes) is failing or stuck right now:
        what /ready reports."""
        return self.connected and not any(s.troubled for s in (self, *self._lanes))

    async def start(self) -> None:
        """Connect now (retrying while Postgres is unreachable) rather than at the first flush."""

        async def noop(conn: asyncpg.Connection) -> None:
            return None

        await self._run(noop)
        lanes = [
            PostgresSink(self.settings, self._on_retry) for _ in range(self.settings.sink_connections - 1)
        ]
        for lane in lanes:
            lane._prices = self._prices
            await lane._run(noop)
        self._lanes = lanes

    async def stop(self) -> None:
        self._stopped = True  # a retry under way gives up instead of reconnecting
        for lane in self._lanes:
            await lane.stop()
        await self.close()

    async def flush(self, batch: Batch, refuse: Refuse | None = None) -> FlushResult:
        """Make the batch durable; returns only once all of it is committed.

        With several connections the batch's partitions are shared out and each share commits
        in its own transaction. Should one fail, the others may have committed: the batch stays
        unacknowledged and its replay finds their charges fenced off, so nothing counts twice.
        """
        lanes = [self, *self._lanes]
        parts = batch.split(len(lanes))
        if len(parts) == 1:
            return await self._flush(batch, refuse)
        outcomes = await asyncio.gather(
            *(lane._flush(part, refuse) for lane, part in zip(lanes, parts, strict=False)),
            return_exceptions=True,
        )
        done = [o for o in outcomes if isinstance(o, FlushResult)]
        if len(done) < len(outcomes):  # every share has finished: now report the failure
            raise next(o for o in outcomes if isinstance(o, BaseException))
        return FlushResult.total(done)

    async def _flush(self, batch: Batch, refuse: Refuse | None = None) -> FlushResult:
        """One transaction for the batch. Charges found too late are handed to `refuse` (their
        dead letters must be durable first), outside the transaction, and the flush runs again
        without them; closures only grow, so the verdicts of a retry include the earlier ones."""
        refused: set[tuple[int, int, int]] = set()
        while True:
            try:
                return await self._run(
                    lambda conn: self._write(conn, batch.without(refused) if refused else batch)
                )
            except _TooLate as exc:
                if refuse is None:
                    raise SinkFatalError(
                        "charges too late to bill, and nowhere to dead-letter them"
                    ) from None
                await refuse(exc.charges)
                refused.update((c.partition, c.offset, c.position) for c in exc.charges)

    async def _write(self, conn: asyncpg.Connection, batch: Batch) -> FlushResult:
        if batch.empty:
            return FlushResult(0, 0, 0, 0.0)
        started = asyncio.get_running_loop().time()
        partitions = sorted(batch.marks)
        marks = [batch.marks[p] for p in partitions]
        async with conn.transaction():
            locked = await conn.fetch(sql.LOCK_PARTITIONS, self.topic, partitions)
            if len(locked) != len(partitions):
                raise SinkFatalError(
                    f"partitions {partitions} of {self.topic!r} are not all known to the sink; "
                    f"does BILLING_PARTITIONS ({self.settings.partitions}) match the topic?"
                )
            sources, fences = await self._sources(conn, locked, batch)
            closed = await conn.fetchval(sql.READ_CLOSED)
            written = late = duplicates = 0
            charges = 0
            pricing: Pricing | None = None
            cost, currency = 0, None
            if batch.rows:
                closure_rows = await conn.fetch(sql.CLOSURES, sorted(set(sources.values())))
                marks_by_source = closure_marks(closure_rows)
                admission = admit(batch.rows, sources, fences, marks_by_source, self._horizon_days)
                if admission.too_late:
                    raise _TooLate(admission.too_late)
                if admission.admitted:
                    await conn.execute(sql.PLAN_FOR_BATCH)
                    winners = await self._winners(conn, admission.admitted, sources)
                    pricing = Pricing(await self._prices.current(conn))
                    settled = settle(admission.admitted, sources, winners, marks_by_source, pricing)
                    written, late, duplicates = len(settled.by_day), settled.late, settled.duplicates
                    charges = len(admission.admitted)
                    cost, currency = settled.cost_nanos, settled.currency
                    if settled.by_day:
                        daily = staging_records(settled.by_day, settled.day_currency)
                        await conn.copy_records_to_table(sql.STAGE_DAILY, records=daily)
                        await conn.execute(sql.UPSERT, closed)
                        models = staging_records(settled.by_model, settled.model_currency)
                        await conn.copy_records_to_table(sql.STAGE_MODELS, records=models)
                        await conn.execute(sql.UPSERT_MODELS, closed)
            crashpoints.reached("inside_flush_transaction")
            days = days_by_partition(batch)
            await conn.execute(
                sql.ADVANCE,
                self.topic,
                partitions,
                [m.max_offset for m in marks],
                [m.max_event_time for m in marks],
                [m.charges > 0 for m in marks],
                [days.get(p, (None, None))[0] for p in partitions],
                [days.get(p, (None, None))[1] for p in partitions],
            )
        elapsed = asyncio.get_running_loop().time() - started
        unpriced = tuple((*k, n) for k, n in pricing.unpriced.items()) if pricing else ()
        return FlushResult(
            charges, int(duplicates), int(written), elapsed, int(late), unpriced, cost, currency
        )

    async def _winners(
        self, conn: asyncpg.Connection, admitted: list[PendingCharge], sources: dict[int, int]
    ) -> dict[bytes, Coordinates]:
        """Record the batch's new idempotency keys; the winner of every key of the batch."""
        counted_before: set[bytes] = set()
        if self._legacy_ledger:  # bare event_ids from before the upgrade: counted already
            found = {r[0] for r in await conn.fetch(sql.LEGACY_SEEN, list({c.event_id for c in admitted}))}
            counted_before = {c.dedup_key for c in admitted if c.event_id in found}
        winners = first_sightings((c for c in admitted if c.dedup_key not in counted_before), sources)
        keys = sorted(winners)  # in index order: a B-tree takes sorted inserts far faster
        if keys:
            seen = [(k, *winners[k]) for k in keys]
            await conn.copy_records_to_table(sql.STAGE_SEEN, records=seen)
            if await conn.fetchval(sql.RECORD_SEEN) < len(keys):  # known before: those win
                for r in await conn.fetch(sql.SEEN_ELSEWHERE):
                    winners[r[0]] = (r[1], r[2], r[3])
        for key in counted_before:
            winners[key] = (-1, -1, -1)  # no copy in this batch wins
        return winners

    async def _sources(
        self, conn: asyncpg.Connection, locked: list[asyncpg.Record], batch: Batch
    ) -> tuple[dict[int, int], dict[int, int]]:
        """Each partition's current source (a new one when its offset 0 now holds another record)
        and each source's fence."""
        sources: dict[int, int] = {}
        fences: dict[int, int] = {}
        for r in locked:
            partition, source, fence, stored = (
                r["partition"],
                r["source_id"],
                r["applied_offset"],
                r["first_record"],
            )
            fingerprint = batch.marks[partition].first_record
            starts_over = fingerprint is not None and stored is not None and stored != fingerprint
            if source is None or starts_over:
                if starts_over:
                    log.warning(
                        "partition %d of %s starts over at offset 0 with another record (topic recreated or "
                        "broker restarted empty): a new source, fenced from the old one",
                        partition,
                        self.topic,
                    )
                source = await conn.fetchval(
                    sql.NEW_SOURCE, self.topic, partition, fingerprint, fence, r["source_id"]
                )
                fence = -1
            elif fingerprint is not None and stored is None:
                await conn.execute(sql.SET_FIRST_RECORD, self.topic, partition, fingerprint, source)
            sources[partition], fences[source] = source, fence
        return sources, fences

    async def purge_seen(self) -> int:
        """Forget idempotency keys older than BILLING_DEDUP_HORIZON."""

        async def purge(conn: asyncpg.Connection) -> int:
            status = await conn.execute(sql.PURGE_SEEN, self.settings.dedup_horizon)
            if self._legacy_ledger:
                await conn.execute(sql.PURGE_LEGACY, self.settings.dedup_horizon)
                self._legacy_ledger = bool(await conn.fetchval(sql.LEGACY_PRESENT))
            return int(status.split()[-1])

        return await self._run(purge)

    async def skips(self) -> set[tuple[int, int]]:
        """(partition, offset) of the records an operator chose to skip (`billing dlq skip`)."""

        async def read(conn: asyncpg.Connection) -> set[tuple[int, int]]:
            return {(r[0], r[1]) for r in await conn.fetch(sql.SKIPS, self.topic)}

        return await self._run(read)

    async def day_status(self) -> tuple[int, date | None]:
        """(billing days with provisional rows, closed_through) for the metrics."""

        async def read(conn: asyncpg.Connection) -> tuple[int, date | None]:
            open_days = await conn.fetchval(sql.OPEN_DAYS)
            return int(open_days), await conn.fetchval(sql.READ_CLOSED)

        return await self._run(read)

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        # The bookkeeping rows every flush locks; cheap and idempotent, so on every connect.
        await conn.execute(sql.ENSURE_PARTITIONS, self.topic, self.settings.partitions)
        await conn.execute(sql.ENSURE_CALENDAR)
        for stage in sql.STAGES:  # private to this connection: a pooler must keep sessions
            await conn.execute(stage)
        self._legacy_ledger = bool(await conn.fetchval(sql.LEGACY_PRESENT))
