"""`billing replay`: move the worker's consumer group back, by offsets or by a point in time.

Why replay is only an offset commit: the sink's fences live in Postgres (`streams.sink.postgres`), one
per source, committed with the totals. A replayed record at or below its source's fence is
skipped; after Postgres is restored from a backup, the restored fences are those of the
restored rows, so exactly what the backup lacks is applied again (docs/architecture.md).

Why timestamps are checked against records: Tansu answers `offsets_for_times` by append time
and under-reports end offsets. Every answer is verified by reading the records around
it, a wrong one replaced by bisecting over records (right on any broker); ends are read, never
trusted. The pure parts take a "timestamp at offset" function: unit tests need no broker.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from streams.config.settings import Settings
from streams.errors import GroupBusyError
from streams.kafka.client import aiokafka_options
from streams.kafka.topic_reader import partitions_of, read_topic

TimestampAt = Callable[[int], Awaitable[int]]  # offset -> timestamp (ms) of the first record at/after it
OffsetSpec = dict[int | None, int | None]  # partition (None: all) -> offset (None: earliest)

_PAIR = re.compile(r"^\s*(all|\d+)\s*:\s*(earliest|\d+)\s*$")


def parse_offsets(text: str) -> OffsetSpec:
    """`P:O[,P:O...]` -> {partition: offset}. `all:O` sets every partition (explicit pairs win);
    `earliest` stands for the first offset the broker still keeps. Errors are one line."""
    spec: OffsetSpec = {}
    for part in text.split(","):
        match = _PAIR.match(part)
        if not match:
            raise ValueError(
                f"bad offset {part.strip()!r}: expected PARTITION:OFFSET, e.g. 0:1200,3:0 or all:0"
            )
        partition = None if match.group(1) == "all" else int(match.group(1))
        if partition in spec:
            raise ValueError(f"partition {match.group(1)} given twice")
        spec[partition] = None if match.group(2) == "earliest" else int(match.group(2))
    return spec


def expand_offsets(spec: OffsetSpec, partitions: Iterable[int]) -> dict[int, int | None]:
    """The spec over the topic's real partitions; unknown partitions are an error."""
    known = sorted(partitions)
    unknown = sorted(p for p in spec if p is not None and p not in known)
    if unknown:
        raise ValueError(
            f"unknown partition(s) {', '.join(map(str, unknown))}: the topic has partitions 0..{len(known) - 1}"
        )
    out = {p: spec[None] for p in known} if None in spec else {}
    out.update({p: o for p, o in spec.items() if p is not None})
    return dict(sorted(out.items()))


async def first_offset_at_or_after(timestamp_at: TimestampAt, lo: int, hi: int, target: int) -> int:
    """The first offset in [lo, hi) whose record is stamped at or after `target`; `hi` if none.

    Exact when timestamps never decrease (one producer clock, or LogAppendTime). With several
    skewed producer clocks it still returns a crossing point o with ts(o) >= target > ts(o - 1)
    in O(log n) reads; replaying from a little earlier costs nothing, so pick T with a margin.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        if await timestamp_at(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def answer_checks_out(timestamp_at: TimestampAt, candidate: int, lo: int, hi: int, target: int) -> bool:
    """Whether a broker's `offsets_for_times` answer agrees with the records themselves:
    the record at the answer is at or after `target` and the one before it is earlier."""
    if not lo <= candidate <= hi:
        return False
    if candidate < hi and await timestamp_at(candidate) < target:
        return False
    return not (candidate > lo and await timestamp_at(candidate - 1) >= target)


@dataclass(slots=True)
class PartitionPlan:
    """Where the group stands on one partition and where the replay puts it."""

    partition: int
    start: int  # first offset the broker keeps
    end: int  # one past the last record, found by reading
    committed: int | None  # None: the group never committed; a worker starts at `start`
    new: int | None = None
    how: str = ""  # how `new` was found: "offsets", "broker" (verified), "bisect", "kept"
    records_between: int | None = None

    @property
    def position(self) -> int:
        """Where a worker of the group would resume now."""
        return self.start if self.committed is None else self.committed

    @property
    def changes(self) -> bool:
        return self.new is not None and self.new != self.committed


class TopicInspector:
    """A group-less consumer on the charges topic: bounds, single-record timestamps, counts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.charges_topic
        self.consumer = AIOKafkaConsumer(
            **aiokafka_options(settings), enable_auto_commit=False, fetch_max_wait_ms=100
        )
        self.partitions: list[int] = []

    async def __aenter__(self) -> TopicInspector:
        try:
            await self.consumer.start()
            tps = await partitions_of(self.consumer, self.topic)
        except BaseException:
            await self.consumer.stop()
            raise
        self.consumer.assign(tps)
        self.partitions = [tp.partition for tp in tps]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    async def bounds(self) -> dict[int, tuple[int, int]]:
        """(first kept offset, true end) per partition; the end is read, not asked for."""
        tps = [self.tp(p) for p in self.partitions]
        starts = await self.consumer.beginning_offsets(tps)
        reported = await self.consumer.end_offsets(tps)
        ends = {tp.partition: reported[tp] for tp in tps}
        start_at = {p: max(e, starts[self.tp(p)]) for p, e in ends.items()}
        async for batch in read_topic(self.settings, self.topic, start=start_at, settle=0.5):
            for record in batch:
                ends[record.partition] = max(ends[record.partition], record.offset + 1)
        return {p: (starts[self.tp(p)], ends[p]) for p in self.partitions}

    async def timestamp_at(self, partition: int, offset: int) -> int:
        """The timestamp (ms) of the first record at or after `offset` (which must be < end)."""
        tp = self.tp(partition)
        self.consumer.seek(tp, offset)
        for _ in range(20):
            records = (await self.consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
            if records:
                return int(records[0].timestamp)
        raise TimeoutError(f"partition {partition}: no record at or after offset {offset}")

    async def resolve(self, target_ms: int, plans: Mapping[int, PartitionPlan]) -> None:
        """Set each plan's `new` to the first offset stamped at or after `target_ms`."""
        tps = {p: self.tp(p) for p in plans}
        try:
            answers = await self.consumer.offsets_for_times({tp: target_ms for tp in tps.values()})
        except Exception:  # a broker without ListOffsets v1+: fall back to reading
            answers = {}
        for p, plan in plans.items():
            found = answers.get(tps[p])
            candidate = plan.end if found is None else found.offset

            def at(offset: int, partition: int = p) -> Awaitable[int]:
                return self.timestamp_at(partition, offset)

            if await answer_checks_out(at, candidate, plan.start, plan.end, target_ms):
                plan.new, plan.how = candidate, "broker"
            else:
                plan.new = await first_offset_at_or_after(at, plan.start, plan.end, target_ms)
                plan.how = "bisect"


async def group_members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """Member ids (with host when the broker tells) the broker lists for the group."""
    response = (await admin.describe_consumer_groups([group]))[0].to_object()
    described = response["groups"][0]
    if described["error_code"]:
        raise KafkaError(f"describing group {group!r} failed with error {described['error_code']}")
    return [
        m["member_id"] + (f" on {m['client_host'].lstrip('/')}" if m.get("client_host") else "")
        for m in described["members"]
    ]


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int | None]:
    """The group's committed offsets (None: never committed). Partitions are always listed
    explicitly: without them aiokafka breaks on Tansu."""
    tps = [TopicPartition(topic, p) for p in partitions]
    answer = await admin.list_consumer_group_offsets(group, partitions=tps)
    return {
        tp.partition: (None if answer.get(tp) is None or answer[tp].offset < 0 else answer[tp].offset)
        for tp in tps
    }


async def rewind_group(settings: Settings, offsets: Mapping[int, int], *, force: bool, note: str) -> None:
    """Commit `offsets` for the worker group (settings.app_id), only while no worker is in it.

    A listed member is not proof of a live one: Kafka lists a killed worker for its session
    timeout, Tansu a stopped one until someone joins. So while members are listed this joins for
    a moment with a protocol Faust does not speak: the broker drops expired members at a join and
    refuses it while Faust members live (InconsistentGroupProtocol, no rebalance), so live workers
    are not disturbed. It gives up after the session timeout plus 3 s. `force` commits at once
    from outside the group; brokers still refuse that while the group lists members.
    """
    group, topic = settings.app_id, settings.charges_topic
    commits = {TopicPartition(topic, p): OffsetAndMetadata(o, note) for p, o in offsets.items()}
    session = settings.group_session_timeout.total_seconds()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session + 3
    admin = AIOKafkaAdminClient(**aiokafka_options(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        while True:
            members = await group_members(admin, group)
            if not members or force:
                try:
                    return await _commit_from_outside(settings, commits)
                except CommitFailedError:
                    members = await group_members(admin, group)
                    if force:
                        detail = (
                            "the broker refused the commit (without --force, replay waits for stopped ones)"
                        )
                        raise GroupBusyError(group, members, detail, live=False) from None
            elif await _commit_as_member(settings, commits, session):
                return
            if loop.time() >= deadline:
                raise GroupBusyError(
                    group,
                    members,
                    f"stop the workers (a killed one stays listed for up to "
                    f"BILLING_KAFKA_SESSION_TIMEOUT={session:g}s) and run again",
                )
            await asyncio.sleep(1)
    finally:
        await admin.close()


async def _commit_from_outside(settings: Settings, commits: dict[TopicPartition, OffsetAndMetadata]) -> None:
    """A plain commit (no membership): brokers accept it only while the group is empty."""
    options = aiokafka_options(settings)
    consumer = AIOKafkaConsumer(**options, group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(commits))
        await consumer.commit(commits)
    finally:
        await consumer.stop()


async def _commit_as_member(
    settings: Settings, commits: dict[TopicPartition, OffsetAndMetadata], session: float
) -> bool:
    """Join the group (which also makes the broker drop expired members); commit only when this
    consumer ended up alone with every partition. False when the broker refused the join."""
    consumer = AIOKafkaConsumer(
        settings.charges_topic,
        **aiokafka_options(settings),
        group_id=settings.app_id,
        client_id="billing-replay",
        enable_auto_commit=False,
        session_timeout_ms=int(max(6.0, min(session, 30.0)) * 1000),
        heartbeat_interval_ms=1000,
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout=session + 5)
        if not set(commits) <= consumer.assignment():
            return False
        await consumer.commit(commits)
        return True
    except (KafkaError, TimeoutError):
        return False
    finally:
        await consumer.stop()
