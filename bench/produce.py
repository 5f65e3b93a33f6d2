"""Measurement 5 and the bench's producing: `ChargeProducer` vs a bare aiokafka producer.

The library fills the e2e topic (so its records are the producer layout the worker meets in
production: per-account JSON arrays cut by the 50 ms linger, 500 charges or ~1 MB). Its client
is wrapped to keep a copy of each (key, value) it hands to Kafka; the bare producer then sends
exactly those bytes to a topic of its own with the same client settings (acks=all, linger 5 ms,
256 KiB batches), so the ratio is the library's own cost: validation, JSON encoding, batching,
per-record futures and retry bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.charge import Charge
from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options, idempotent_producer
from streams.producer.producer import ChargeProducer, encode_charge


@dataclass
class Produced:
    charges: int
    records: list[tuple[bytes, bytes]]
    seconds: float

    @property
    def rate(self) -> float:
        return self.charges / self.seconds if self.seconds else 0.0

    @property
    def bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.records)


def _recording_factory(sink: list[tuple[bytes, bytes]]) -> Any:
    class Recording(AIOKafkaProducer):
        async def send(
            self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            sink.append((key, value))
            return await super().send(topic, value, key, *args, **kwargs)

    return Recording


async def with_library(
    settings: Settings, charges: list[Charge], batch: bool = True, record: bool = True
) -> Produced:
    """Send every charge through `ChargeProducer` (batch=False: one charge per record); with
    `record`, keep a copy of the records it sent."""
    records: list[tuple[bytes, bytes]] = []
    factory = _recording_factory(records) if record else AIOKafkaProducer
    producer = ChargeProducer(settings, batch=batch, client_factory=factory)
    await producer.start()
    started = time.perf_counter()
    try:
        for charge in charges:
            await producer.send(charge)
        await producer.flush()
        seconds = time.perf_counter() - started
    finally:
        await producer.close()
    return Produced(len(charges), records, seconds)


def encode_only(charges: list[Charge]) -> float:
    """Charges/s of the JSON encoding alone (`encode_charge`): work any producer of these bytes
    must do per charge, which the bare producer, handed finished bytes, never pays."""
    started = time.perf_counter()
    for charge in charges:
        encode_charge(charge)
    return len(charges) / (time.perf_counter() - started)


async def bare(settings: Settings, topic: str, records: list[tuple[bytes, bytes]], charges: int) -> Produced:
    """The same bytes with a plain AIOKafkaProducer configured as ChargeProducer's client is."""
    producer = AIOKafkaProducer(
        **aiokafka_options(settings),
        acks="all",
        enable_idempotence=idempotent_producer(settings),
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return Produced(charges, records, seconds)
