"""`billing rebuild`: recompute billing days from the charges topic and replace their rows.

Why from the topic: it is the ledger; Postgres rows are derived and may be wrong (a bug in
aggregation, a hand edit, a bad restore). Each record is decoded and judged by the very rules of
the sink (`streams.charge.decode` with the record's own timestamp, `streams.rules.settle` with the recorded
closure marks and dedup winners), so a rebuild reaches the verdicts of the first read.

What it refuses: rows that hold charges the topic no longer has. Every source (one incarnation
of one partition of one topic) records the days it fed; when a source other than the topic's
current ones (a topic before a cut-over, a partition before the broker came back empty) fed a
day of the range, replacing those rows would delete charges that only Postgres still holds. The
rebuild names those sources with their offsets and changes nothing, unless the operator lists
each of them with `--drop-source`.

How it coexists with a running worker: the topic is read without locks; the write is one
transaction that first locks every `billing_partitions` row of the topic (ascending, like a flush
and a day closure, so no deadlock). Only charges at or below each source's fence are counted:
those are exactly what the rows hold; what lies beyond is the worker's to add after the rebuild.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from streams.charge.dead_letter import waived_rules
from streams.charge.decode import Limits, decode_record
from streams.charge.windows import day_start
from streams.config.settings import Settings
from streams.errors import RebuildRefused
from streams.kafka.topic_reader import read_topic
from streams.ops.rebuild_rows import replace_rows
from streams.rules.batch import Batch, record_fingerprint
from streams.rules.pending import Coordinates, PendingCharge
from streams.rules.price_book import Pricing
from streams.rules.settle import NO_MARKS, closure_marks, first_sightings, horizon_days, is_too_late, settle
from streams.sink import sql as sink_sql
from streams.sink.prices import load_book

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (partition, records read so far in it)


@dataclass(slots=True)
class RebuildResult:
    records: int = 0  # Kafka records read
    charges: int = 0  # distinct valid charges billed in the range
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    cost_before: dict[str, int] = field(default_factory=dict)  # nano-units per account in range
    cost_after: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Collector:
    """Every accepted charge of the topic, as the worker would have batched it."""

    settings: Settings
    batch: Batch = field(init=False)
    ends: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # one past the last read
    read: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    oldest: dict[int, tuple[int, int]] = field(default_factory=dict)  # first read: offset, timestamp ms
    first_records: dict[int, str] = field(default_factory=dict)  # fingerprint of each offset 0
    records: int = 0

    def __post_init__(self) -> None:
        self.batch = Batch(self.settings.zone)

    def add(self, record: ConsumerRecord[Any, Any], progress: Progress | None) -> None:
        partition, offset = record.partition, record.offset
        s = self.settings
        waived = waived_rules(record.headers)
        limits = Limits(
            datetime.fromtimestamp(record.timestamp / 1000, UTC), s.max_clock_skew, s.zone, None, waived
        )
        decoded = decode_record(record.value, record.key, limits)
        fingerprint = None
        if offset == 0:
            fingerprint = record_fingerprint(record.key, record.value, record.timestamp / 1000)
            self.first_records[partition] = fingerprint
        self.batch.add_record(
            partition,
            offset,
            decoded.charges,
            decoded.positions,
            fingerprint,
            accept_late="too_late" in waived,
        )
        self.batch.records.clear()  # the bytes are not needed here
        self.oldest.setdefault(partition, (offset, record.timestamp))
        self.ends[partition] = max(self.ends[partition], offset + 1)
        self.records += 1
        self.read[partition] += 1
        if progress is not None:
            progress(partition, self.read[partition])


async def rebuild(
    settings: Settings,
    first: date,
    last: date,
    progress: Progress | None = None,
    dry_run: bool = False,
    drop_sources: Iterable[int] = (),
) -> RebuildResult:
    """Recompute [first, last] from the topic and make the rows say exactly that."""
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    topic = settings.charges_topic
    collector = _Collector(settings)
    conn = await asyncpg.connect(settings.dsn, timeout=10)  # first: fail fast, before a long read
    try:
        await conn.execute(sink_sql.ENSURE_PARTITIONS, topic, settings.partitions)
        await conn.execute(sink_sql.ENSURE_CALENDAR)
        async for batch in read_topic(settings, topic):
            for record in batch:
                collector.add(record, progress)
        _refuse_if_trimmed(settings, collector, first)
        tx = conn.transaction()
        await tx.start()
        try:
            result = await _write(conn, settings, collector, first, last, set(drop_sources), progress)
        except BaseException:
            await tx.rollback()
            raise
        await (tx.rollback() if dry_run else tx.commit())
        return result
    finally:
        await conn.close()


def _refuse_if_trimmed(settings: Settings, collector: _Collector, first: date) -> None:
    """Replacing rows from a topic that lost some of their records would lose charges: refuse when
    retention deleted records (first offset > 0) that may hold charges of the range, i.e. the
    oldest kept record is younger than the range's start minus BILLING_MAX_CLOCK_SKEW."""
    earliest = day_start(first, settings.zone) - settings.max_clock_skew
    for partition, (offset, stamp) in sorted(collector.oldest.items()):
        kept_since = datetime.fromtimestamp(stamp / 1000, UTC)
        if offset > 0 and kept_since > earliest:
            raise RebuildRefused(
                f"partition {partition} of {settings.charges_topic} keeps records only from offset {offset} "
                f"({kept_since:%Y-%m-%d %H:%M}Z): charges of {first} may be gone; nothing changed"
            )


async def _check_sources(
    conn: asyncpg.Connection,
    topic: str,
    collector: _Collector,
    sources: dict[int, int | None],
    first: date,
    last: date,
    drop: set[int],
) -> None:
    """Refuse when rows of the range hold charges of sources this topic cannot give back."""
    current = [s for s in sources.values() if s is not None]
    stored = dict(await conn.fetch(sink_sql.REBUILD_SOURCE_FIRST_RECORDS, current))
    for partition, fingerprint in sorted(collector.first_records.items()):
        source = sources.get(partition)
        if source is not None and stored.get(source) not in (None, fingerprint):
            raise RebuildRefused(
                f"partition {partition} of {topic} starts with another record than the one the rows were "
                "made from (the topic was recreated or the broker came back empty, and no worker has read "
                "it since): start a worker first, then rebuild; nothing changed"
            )
    lost = [
        r for r in await conn.fetch(sink_sql.REBUILD_UNREADABLE, current, first, last) if r["id"] not in drop
    ]
    if lost:
        names = "; ".join(
            f"source {r['id']} = {r['topic']}[{r['partition']}] incarnation {r['incarnation']} "
            f"(offsets 0..{r['last_offset']}, days {r['min_day']}..{r['max_day']})"
            for r in lost
        )
        flags = " ".join(f"--drop-source {r['id']}" for r in lost)
        raise RebuildRefused(
            f"rows of {first}..{last} hold charges that {topic} no longer has: {names}. A rebuild would "
            f"delete them; nothing changed. To drop exactly those charges, repeat with {flags}"
        )


async def _winners(
    conn: asyncpg.Connection, admitted: list[PendingCharge], sources: dict[int, int]
) -> dict[bytes, Coordinates]:
    """The copy that counts per idempotency key: the ledger's winner, else the first sighting."""
    winners = first_sightings(admitted, sources)
    keys = list(winners)
    for start in range(0, len(keys), 50_000):
        for r in await conn.fetch(sink_sql.REBUILD_WINNERS, keys[start : start + 50_000]):
            winners[r[0]] = (r[1], r[2], r[3])
    return winners


async def _write(
    conn: asyncpg.Connection,
    settings: Settings,
    collector: _Collector,
    first: date,
    last: date,
    drop: set[int],
    progress: Progress | None,
) -> RebuildResult:
    topic = settings.charges_topic
    locked = await conn.fetch(sink_sql.LOCK_ALL_PARTITIONS, topic)
    applied = {r["partition"]: r["applied_offset"] for r in locked}
    by_partition: dict[int, int | None] = {r["partition"]: r["source_id"] for r in locked}
    await _check_sources(conn, topic, collector, by_partition, first, last, drop)
    tail = {p: collector.ends[p] for p, fence in applied.items() if fence >= collector.ends[p]}
    if tail:  # the worker got further than our read: take its tail while it waits for us
        stop = {p: applied[p] + 1 for p in tail}
        async for batch in read_topic(settings, topic, tail, stop, partitions=tail, settle=0.5):
            for record in batch:
                collector.add(record, progress)
    sources = {p: s for p, s in by_partition.items() if s is not None}
    counted = [c for c in collector.batch.rows if c.partition in sources and c.offset <= applied[c.partition]]
    marks = closure_marks(await conn.fetch(sink_sql.CLOSURES, sorted(set(sources.values()))))
    days = horizon_days(settings.late_horizon.total_seconds())
    admitted = [
        c
        for c in counted
        if not is_too_late(c, marks.get(sources[c.partition], NO_MARKS).closed_before(c.offset), days)
    ]
    winners = await _winners(conn, admitted, sources)
    in_range = [c for c in admitted if first <= c.day <= last]
    # The current book prices every charge again: a rebuild is also how a past period is repriced.
    settled = settle(in_range, sources, winners, marks, Pricing(await load_book(conn)))
    closed = await conn.fetchval(sink_sql.READ_CLOSED)
    result = RebuildResult(records=collector.records, charges=sum(d.charge_count for d in settled.deltas))
    result.cost_before = dict(await conn.fetch(sink_sql.REBUILD_COST_BY_ACCOUNT, first, last))
    for d in settled.deltas:
        result.cost_after[d.key[0]] = result.cost_after.get(d.key[0], 0) + d.cost_nanos
    rows = await replace_rows(
        conn, sink_sql.REBUILD_DAILY, {d.key: d for d in settled.deltas}, first, last, closed
    )
    await replace_rows(
        conn, sink_sql.REBUILD_BY_MODEL, {d.key: d for d in settled.model_deltas}, first, last, closed
    )
    result.deleted, result.updated, result.inserted = rows.deleted, rows.updated, rows.inserted
    result.unchanged = rows.unchanged
    return result
