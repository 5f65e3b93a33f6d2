"""`billing rebuild`: recompute billing days from the charges topic and replace their rows.

Why from the topic: it is the ledger; Postgres rows and the sink's bookkeeping are derived and
may be wrong (a bug in aggregation, a hand edit, a bad restore). Each record is decoded with
`streams.decode` using the record's own timestamp as "now", so the clock-skew and late-horizon
verdicts are those of its arrival, not of today. Charges count once per event_id (the first by
partition and offset, as the sink's `billing_seen_events` decides).

How it coexists with a running worker: the topic is read without locks; the write is one
transaction that first locks every `billing_partitions` row of the topic (ascending, like a
flush and a day closure, so no deadlock). If the worker applied records beyond what was read,
that tail is read under the lock, so the new rows hold everything the worker had applied. Each
row's fence (`source_partition`, `last_offset`) is the last offset of its charges, so the worker
then skips what the rebuild already counted and adds only later charges. The worker merely
waits for the write phase. Lateness follows `billing_closures` exactly as the sink's rules do.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams import sink_sql
from streams.aggregate import DailyKey, daily_key, record_fingerprint
from streams.config import Settings
from streams.decode import Limits, decode_record
from streams.kafka import aiokafka_options
from streams.settle import Closures, closure_mark, closures_by_partition
from streams.topic_reader import read_topic
from streams.windows import day_start

log = logging.getLogger(__name__)

SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
COUNTS = (*SUMS, "charge_count", "late_charge_count")
Progress = Callable[[int, int], None]  # (partition, records read so far in it)

OLD_ROWS = """
SELECT id, account_id, user_id, provider, date, charge_type, prompt_tokens, completion_tokens,
       total_tokens, cached_tokens, reasoning_tokens, charge_count, late_charge_count, revision,
       finalized_at, source_partition, last_offset
FROM daily_billing_records WHERE date BETWEEN $1 AND $2 ORDER BY id FOR UPDATE
"""
CLOSURES = "SELECT partition, closed_through, applied_offset FROM billing_closures WHERE topic = $1"
DELETE = "DELETE FROM daily_billing_records WHERE id = ANY($1::bigint[])"
# $1 ids, $2..$8 the counts (COUNTS order), $9 revision, $10 final, $11 partition, $12 last offset
UPDATE = """
UPDATE daily_billing_records d SET
    prompt_tokens = u.pt, completion_tokens = u.ct, total_tokens = u.tt, cached_tokens = u.cat,
    reasoning_tokens = u.rt, charge_count = u.cc, late_charge_count = u.lc, revision = u.rev,
    finalized_at = coalesce(d.finalized_at, CASE WHEN u.final THEN now() END),
    source_partition = u.sp, last_offset = u.lo, updated_at = now()
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::integer[], $10::boolean[], $11::integer[], $12::bigint[])
     AS u(id, pt, ct, tt, cat, rt, cc, lc, rev, final, sp, lo)
WHERE d.id = u.id
"""
INSERT = """
INSERT INTO daily_billing_records
    (account_id, user_id, provider, date, charge_type, prompt_tokens, completion_tokens,
     total_tokens, cached_tokens, reasoning_tokens, charge_count, late_charge_count, revision,
     finalized_at, source_partition, last_offset)
SELECT a, u, p, d, t, pt, ct, tt, cat, rt, cc, lc, rev, CASE WHEN final THEN now() END, sp, lo
FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::integer[],
            $14::boolean[], $15::integer[], $16::bigint[])
     AS x(a, u, p, d, t, pt, ct, tt, cat, rt, cc, lc, rev, final, sp, lo)
"""


@dataclass(slots=True)
class Row:
    """One recomputed daily record: the counts in COUNTS order and the fence."""

    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    partition: int = -1
    last_offset: int = -1


@dataclass(slots=True)
class RebuildResult:
    records: int = 0  # Kafka records read
    charges: int = 0  # distinct valid charges billed in the range
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


class _Collector:
    """Decodes records and keeps the first sighting of every event_id billed in the range."""

    def __init__(self, settings: Settings, first: date, last: date) -> None:
        self.settings, self.first, self.last = settings, first, last
        self.seen: dict[str, tuple[int, int, int]] = {}  # event_id -> (partition, offset, index)
        self.kept: dict[str, tuple[DailyKey, list[int]]] = {}  # billed in the range: key, sums
        self.ends: dict[int, int] = defaultdict(int)  # one past the last offset read
        self.read: dict[int, int] = defaultdict(int)  # records read per partition
        self.oldest: dict[int, tuple[int, int]] = {}  # first record read: (offset, timestamp ms)
        self.fences: dict[DailyKey, tuple[int, int]] = {}  # duplicates move a row's fence too
        self.first_records: dict[int, str] = {}  # fingerprint of each partition's offset 0
        self.records = 0

    def add(self, record: ConsumerRecord[Any, Any], progress: Progress | None) -> None:
        partition, offset = record.partition, record.offset
        now = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        s = self.settings
        limits = Limits(now, s.max_clock_skew, s.zone, s.late_horizon)
        decoded = decode_record(record.value, record.key, limits)
        if offset == 0:
            self.first_records[partition] = record_fingerprint(
                record.key, record.value, record.timestamp / 1000
            )
        for index, charge in zip(decoded.positions, decoded.charges, strict=True):
            where = (partition, offset, index)
            key = daily_key(charge, s.zone)
            if self.first <= key[3] <= self.last:
                self.fences[key] = max(self.fences.get(key, (partition, offset)), (partition, offset))
            previous = self.seen.get(charge.event_id)
            if previous is not None and previous <= where:
                continue
            self.seen[charge.event_id] = where
            if self.first <= key[3] <= self.last:
                sums = [charge.prompt_tokens, charge.completion_tokens, charge.total]
                self.kept[charge.event_id] = (key, [*sums, charge.cached_tokens, charge.reasoning_tokens])
            else:
                self.kept.pop(charge.event_id, None)
        self.oldest.setdefault(partition, (offset, record.timestamp))
        self.ends[partition] = max(self.ends[partition], offset + 1)
        self.records += 1
        self.read[partition] += 1
        if progress is not None:
            progress(partition, self.read[partition])

    def rows(self, closures: Closures) -> dict[DailyKey, Row]:
        """Fold the kept charges; a charge is late as in the sink (`streams.settle`: its day's
        first closure on its partition happened before the sink reached its offset)."""
        out: dict[DailyKey, Row] = defaultdict(Row)
        for event_id, (key, sums) in self.kept.items():
            partition, offset, _ = self.seen[event_id]
            row = out[key]
            for i, value in enumerate(sums):
                row.counts[i] += value
            row.counts[5] += 1
            mark = closure_mark(closures, partition, key[3])
            if mark is not None and offset > mark:
                row.counts[6] += 1
            if offset > row.last_offset:
                row.partition, row.last_offset = partition, offset
        for key, row in out.items():  # as in the sink: a re-sent copy's offset fences the row too
            row.partition, row.last_offset = max(
                (row.partition, row.last_offset), self.fences.get(key, (0, -1))
            )
        return dict(out)


async def rebuild(
    settings: Settings, first: date, last: date, progress: Progress | None = None, dry_run: bool = False
) -> RebuildResult:
    """Recompute [first, last] from the topic and make the rows say exactly that."""
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    topic = settings.charges_topic
    collector = _Collector(settings, first, last)
    conn = await asyncpg.connect(settings.dsn, timeout=10)  # first: fail fast, before a long read
    try:
        await conn.execute(sink_sql.ENSURE_PARTITIONS, topic, settings.partitions)
        await conn.execute(sink_sql.ENSURE_STATE, topic)
        async for batch in read_topic(settings, topic):
            for record in batch:
                collector.add(record, progress)
        _refuse_if_trimmed(settings, collector)
        tx = conn.transaction()
        await tx.start()
        try:
            result = await _write(conn, settings, collector, progress)
        except BaseException:
            await tx.rollback()
            raise
        await (tx.rollback() if dry_run else tx.commit())
        return result
    finally:
        await conn.close()


def _refuse_if_trimmed(settings: Settings, collector: _Collector) -> None:
    """Replacing rows from a topic that lost some of their records would lose charges: refuse when
    retention deleted records (first offset > 0) that may hold charges of the range, i.e. the
    oldest kept record is younger than the range's start minus BILLING_MAX_CLOCK_SKEW."""
    earliest = day_start(collector.first, settings.zone) - settings.max_clock_skew
    for partition, (offset, stamp) in sorted(collector.oldest.items()):
        kept_since = datetime.fromtimestamp(stamp / 1000, UTC)
        if offset > 0 and kept_since > earliest:
            raise ValueError(
                f"partition {partition} of {settings.charges_topic} keeps records only from offset {offset} "
                f"({kept_since:%Y-%m-%d %H:%M}Z): charges of {collector.first} may be gone; nothing changed"
            )


FIRST_RECORDS = "SELECT partition, first_record FROM billing_partitions WHERE topic = $1"


async def _write(
    conn: asyncpg.Connection, settings: Settings, collector: _Collector, progress: Progress | None
) -> RebuildResult:
    topic = settings.charges_topic
    locked = await conn.fetch(sink_sql.LOCK_ALL_PARTITIONS, topic)
    stored = dict(await conn.fetch(FIRST_RECORDS, topic))
    for partition, fingerprint in collector.first_records.items():
        if stored.get(partition) not in (None, fingerprint):
            raise ValueError(
                f"partition {partition} of {topic} is not the topic the rows were made from (its first "
                "record differs: recreated, or the embedded broker restarted); a rebuild would drop the "
                "charges that are only in Postgres; nothing changed"
            )
    behind = {r["partition"]: r["applied_offset"] for r in locked}
    tail = {p: collector.ends[p] for p, applied in behind.items() if applied >= collector.ends[p]}
    if tail:  # the worker got further than our read: take its tail while it waits for us
        stop = {p: behind[p] + 1 for p in tail}
        async for batch in read_topic(settings, topic, tail, stop, partitions=tail, settle=0.5):
            for record in batch:
                collector.add(record, progress)
    closed = await conn.fetchval(sink_sql.READ_CLOSED, topic)
    closures = closures_by_partition(await conn.fetch(CLOSURES, topic))
    fresh = collector.rows(closures)
    result = RebuildResult(records=collector.records, charges=len(collector.kept))
    deletes: list[int] = []
    updates: list[list[object]] = [[] for _ in range(12)]
    for old in await conn.fetch(OLD_ROWS, collector.first, collector.last):
        key = (old["account_id"], old["user_id"], old["provider"], old["date"], old["charge_type"])
        row = fresh.pop(key, None)
        if row is None:
            deletes.append(old["id"])
            continue
        totals_changed = row.counts != [old[c] for c in COUNTS]
        finalize = old["finalized_at"] is None and closed is not None and key[3] <= closed
        fence_moved = (row.partition, row.last_offset) != (old["source_partition"], old["last_offset"])
        if not (totals_changed or finalize or fence_moved):
            result.unchanged += 1
            continue
        revision = old["revision"] + (1 if totals_changed else 0)
        values = [old["id"], *row.counts, revision, finalize, row.partition, row.last_offset]
        for column, value in zip(updates, values, strict=True):
            column.append(value)
    inserts: list[list[object]] = [[] for _ in range(16)]
    for key, row in sorted(fresh.items()):
        final = closed is not None and key[3] <= closed
        values = [*key, *row.counts, 1 if row.counts[6] else 0, final, row.partition, row.last_offset]
        for column, value in zip(inserts, values, strict=True):
            column.append(value)
    if deletes:
        await conn.execute(DELETE, deletes)
    if updates[0]:
        await conn.execute(UPDATE, *updates)
    if inserts[0]:
        await conn.execute(INSERT, *inserts)
    result.deleted, result.updated, result.inserted = len(deletes), len(updates[0]), len(inserts[0])
    return result


async def check_retention(settings: Settings) -> list[str]:
    """Warnings when the charges topic may drop records that replay and rebuild still need.

    A charge can still change its day's row up to BILLING_LATE_HORIZON after that day, so the
    topic must keep at least the horizon plus one day plus BILLING_MAX_CLOCK_SKEW; size-based
    retention or compaction (by account!) would silently lose charges. A broker that cannot
    describe configs (or omits them: Tansu enforces no retention) yields no warning.
    """
    topic = settings.charges_topic
    needed = settings.late_horizon + settings.max_clock_skew + timedelta(days=1)
    admin = AIOKafkaAdminClient(**aiokafka_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        answer = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        resource = answer[0].to_object()["resources"][0]
        configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    except Exception as exc:  # unsupported, unreachable, unknown topic: not this check's job
        log.debug("cannot describe the configs of topic %s: %r", topic, exc)
        return []
    finally:
        await admin.close()
    warnings = []
    ms = configs.get("retention.ms")
    if ms not in (None, "-1") and int(ms) < needed.total_seconds() * 1000:
        warnings.append(
            f"topic {topic} keeps records for {int(ms) / 86_400_000:g} days (retention.ms={ms}); replay and "
            f"rebuild need at least {needed.total_seconds() / 86400:g} days (BILLING_LATE_HORIZON + 1 day "
            f"+ BILLING_MAX_CLOCK_SKEW): set retention.ms=-1 or larger"
        )
    if configs.get("retention.bytes") not in (None, "-1"):
        warnings.append(
            f"topic {topic} has retention.bytes={configs['retention.bytes']}: size-based retention may "
            "delete charges that replay and rebuild need; set retention.bytes=-1"
        )
    if "compact" in (configs.get("cleanup.policy") or ""):
        warnings.append(
            f"topic {topic} has cleanup.policy={configs['cleanup.policy']}: compaction keeps one record per "
            "account and loses charges; use cleanup.policy=delete"
        )
    return warnings
