"""Measurement 4: how fast a bare consumer reads and JSON-decodes the very same records.

No group, no commits, no validation: assign every partition, read from the beginning and
`json.loads` each value until every charge was seen (counted by reading: Tansu's end offsets
under-report). Reported in records/s and in charges/s (a batch record holds many),
for aiokafka's `getmany` and, when installed, confluent-kafka's `consume`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.infra import PARTITIONS


@dataclass
class CeilingResult:
    client: str
    records: int
    charges: int
    seconds: float

    @property
    def record_rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def rate(self) -> float:
        return self.charges / self.seconds if self.seconds else 0.0


def _charges_in(value: bytes) -> int:
    parsed = json.loads(value)
    return len(parsed) if isinstance(parsed, list) else 1


async def aiokafka_ceiling(bootstrap: str, topic: str, charges: int, timeout: float = 300) -> CeilingResult:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        records = seen = 0
        started = deadline = time.perf_counter()
        while seen < charges and time.perf_counter() - deadline < timeout:
            before = time.perf_counter()
            fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if not records:
                started = before  # timed from the first fetch that returns records
            for batch in fetched.values():
                records += len(batch)
                for record in batch:
                    seen += _charges_in(record.value)
        return CeilingResult("aiokafka", records, seen, time.perf_counter() - started)
    finally:
        await consumer.stop()


def _confluent(bootstrap: str, topic: str, charges: int, timeout: float) -> CeilingResult | None:
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer
        from confluent_kafka import TopicPartition as CTopicPartition
    except ImportError:
        return None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ceiling-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    try:
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        records = seen = 0
        started = deadline = time.perf_counter()
        while seen < charges and time.perf_counter() - deadline < timeout:
            before = time.perf_counter()
            messages = consumer.consume(10_000, 0.5)
            if not records:
                started = before  # as above: connecting is not reading
            for message in messages:
                if message.error() is None:
                    records += 1
                    seen += _charges_in(message.value())
        return CeilingResult("confluent-kafka", records, seen, time.perf_counter() - started)
    finally:
        consumer.close()


async def confluent_ceiling(
    bootstrap: str, topic: str, charges: int, timeout: float = 300
) -> CeilingResult | None:
    """None when confluent-kafka is not installed (it is optional: the `bench` extra)."""
    return await asyncio.to_thread(_confluent, bootstrap, topic, charges, timeout)
