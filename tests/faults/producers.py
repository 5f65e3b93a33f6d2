"""The producers of the fault harness, one of each kind a real installation meets.

Every kind returns where each charge landed (partition and offset from the delivery metadata),
because ground truth needs the coordinates: lateness is decided by offsets against the closure
marks, and the copy of an idempotency key that counts is the first one to commit.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from streams.producer.producer import ChargeProducer
from tests.support import produce_raw

KINDS = ("library", "single", "librdkafka", "explicit")


@dataclass(frozen=True, slots=True)
class Sent:
    """One charge as produced: the wire dict, where it landed, how, and in which order."""

    charge: dict[str, Any]
    partition: int
    offset: int
    kind: str
    seq: int
    resend: bool = False


class Producers:
    """Sends lists of charges through the kind asked for; numbers them in production order."""

    def __init__(self, settings: Any, rng: random.Random) -> None:
        self.settings, self.rng = settings, rng
        self.topic = settings.charges_topic
        self.bootstrap = settings.kafka_bootstrap
        self.sent: list[Sent] = []
        self.used: dict[str, int] = {}

    async def send(self, kind: str, charges: list[dict[str, Any]], resend: bool = False) -> list[Sent]:
        if not charges:
            return []
        if kind in ("library", "single"):
            landed = await self._library(charges, batch=kind == "library")
        elif kind == "librdkafka":
            landed = await asyncio.to_thread(self._librdkafka, charges)
        elif kind == "explicit":
            landed = await self._explicit(charges)
        else:
            raise ValueError(kind)
        out = []
        for charge, (partition, offset) in zip(charges, landed, strict=True):
            out.append(Sent(charge, partition, offset, kind, len(self.sent) + len(out), resend))
        self.sent.extend(out)
        self.used[kind] = self.used.get(kind, 0) + len(out)
        return out

    async def _library(self, charges: list[dict[str, Any]], batch: bool) -> list[tuple[int, int]]:
        """Our ChargeProducer: murmur2 on the account, several charges per record when batched."""
        async with ChargeProducer(self.settings, batch=batch, linger_ms=20) as producer:
            futures = [await producer.send(c) for c in charges]
            metadata = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in metadata]

    def _librdkafka(self, charges: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """confluent-kafka with librdkafka's default partitioner (CRC32 of the key), one charge
        per record, as kcat, Go, .NET and Node clients send them."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        landed: list[tuple[int, int] | None] = [None] * len(charges)
        errors: list[Any] = []

        def delivered(index: int):
            def callback(err: Any, msg: Any) -> None:
                if err:
                    errors.append(err)
                else:
                    landed[index] = (msg.partition(), msg.offset())

            return callback

        for i, c in enumerate(charges):
            producer.produce(
                self.topic, json.dumps(c).encode(), key=c["account_id"].encode(), on_delivery=delivered(i)
            )
            producer.poll(0)
        left = producer.flush(60)
        if left or errors or None in landed:
            raise RuntimeError(f"librdkafka: {left} undelivered, errors {errors[:3]}")
        return landed  # type: ignore[return-value]

    async def _explicit(self, charges: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """A producer that names the partition itself; records of 1-3 charges of one account."""
        records: list[list[Any]] = []  # [account, charges, partition]
        placed: dict[int, int] = {}  # charge index -> record index
        for i in sorted(range(len(charges)), key=lambda i: charges[i]["account_id"]):
            c = charges[i]
            last = records[-1] if records else None
            if last and last[0] == c["account_id"] and len(last[1]) < 3 and self.rng.random() < 0.6:
                last[1].append(c)
            else:
                records.append([c["account_id"], [c], self.rng.randrange(self.settings.partitions)])
            placed[i] = len(records) - 1
        raw = [(a.encode(), json.dumps(cs if len(cs) > 1 else cs[0]).encode(), p) for a, cs, p in records]
        metadata = await produce_raw(self.bootstrap, self.topic, raw)
        return [(metadata[r].partition, metadata[r].offset) for r in (placed[i] for i in range(len(charges)))]
