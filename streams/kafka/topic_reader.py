"""Read a topic to its end without trusting the broker's end offsets.

Tansu reports a partition's high watermark as the base offset of its last record batch + 1,
so "read until end_offsets" stops short there. This reader keeps fetching until
each partition is both past its reported end and quiet for `settle` seconds, which is right on
real Kafka too (where the first condition alone would do).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions (never auto-creates it: an unknown topic is an error)."""
    known = await consumer.topics()
    if topic not in known:
        raise LookupError(f"topic {topic!r} does not exist")
    ids = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(ids)]


async def read_topic(
    settings: Settings,
    topic: str,
    start: Mapping[int, int] | None = None,
    stop: Mapping[int, int] | None = None,
    partitions: Iterable[int] | None = None,
    settle: float = 1.0,
    batch: int = 5000,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Yield lists of records from `start` offsets (default: the beginning) to the end.

    `stop` bounds a partition (exclusive) when the caller knows where to stop, e.g. a rebuild
    that must read exactly up to what the sink has applied. No consumer group is used.
    """
    consumer = AIOKafkaConsumer(
        **aiokafka_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
    )
    try:
        await consumer.start()
        tps = await partitions_of(consumer, topic)
        if partitions is not None:
            wanted = set(partitions)
            tps = [tp for tp in tps if tp.partition in wanted]
        if not tps:
            return
        consumer.assign(tps)
        for tp in tps:
            offset = (start or {}).get(tp.partition)
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        ends = await consumer.end_offsets(tps)
        open_tps = set(tps)
        loop = asyncio.get_running_loop()
        quiet_since = {tp: loop.time() for tp in tps}
        while open_tps:
            fetched = await consumer.getmany(*open_tps, timeout_ms=200, max_records=batch)
            now = loop.time()
            out: list[Any] = []
            for tp, records in fetched.items():
                limit = (stop or {}).get(tp.partition)
                if limit is not None:
                    records = [r for r in records if r.offset < limit]
                out.extend(records)
                if records:
                    quiet_since[tp] = now
            if out:
                yield out
            for tp in list(open_tps):
                position = await consumer.position(tp)
                limit = (stop or {}).get(tp.partition)
                reached = limit is not None and position >= limit
                if reached or (position >= ends[tp] and now - quiet_since[tp] >= settle):
                    open_tps.discard(tp)
    finally:
        await consumer.stop()
