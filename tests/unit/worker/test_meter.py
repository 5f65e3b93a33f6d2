"""Meter.prepare decodes a take lazily, one chunk of at most batch_charges charges at a time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.config.settings import Settings
from streams.worker import meter as meter_module
from streams.worker.meter import Meter


@dataclass
class Message:
    """What Meter reads of a Faust event's message; counts how often its value is read."""

    partition: int
    offset: int
    raw: bytes
    reads: list[int]
    topic: str = "charges"
    key: bytes = b"acct-1"
    timestamp: float = field(default_factory=lambda: datetime.now(UTC).timestamp())
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def value(self) -> bytes:
        self.reads.append(self.offset)
        return self.raw


@dataclass
class Event:
    message: Message


def record(offset: int, charges: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return json.dumps(
        [
            {
                "event_id": f"e-{offset}-{i}",
                "occurred_at": now,
                "account_id": "acct-1",
                "user_id": "u1",
                "provider": "openai",
                "charge_type": "completion",
                "prompt_tokens": 1,
                "completion_tokens": 1,
            }
            for i in range(charges)
        ]
    ).encode()


async def test_a_take_is_decoded_one_chunk_at_a_time() -> None:
    reads: list[int] = []
    events: list[Any] = [Event(Message(0, offset, record(offset, 30), reads)) for offset in range(10)]
    meter = Meter(Settings(batch_charges=100), sink=None, dlq_topic=None)  # type: ignore[arg-type]
    chunks = meter.prepare(events)
    first = await anext(chunks)
    assert len(first.batch) == 120 and first.records == 4  # the record that crossed 100 closes it
    assert sorted(set(reads)) == [0, 1, 2, 3], "later records must not be decoded before they are needed"
    rest = [chunk async for chunk in chunks]
    assert [c.records for c in rest] == [4, 2]
    assert [e.message.offset for c in [first, *rest] for e in c.events] == list(range(10))
    assert sum(len(c.batch) for c in [first, *rest]) == 300


async def test_a_flush_in_flight_gets_turns_while_the_next_chunk_decodes(monkeypatch) -> None:
    """Decoding holds the event loop; the previous chunk's flush (here: a task that counts its
    turns) must still advance between records, so Postgres is not left waiting for the decode."""
    monkeypatch.setattr(meter_module, "YIELD_EVERY", 0.0)
    reads: list[int] = []
    events: list[Any] = [Event(Message(0, offset, record(offset, 3), reads)) for offset in range(50)]
    meter = Meter(Settings(batch_charges=10_000), sink=None, dlq_topic=None)  # type: ignore[arg-type]
    turns = 0

    async def flush_in_flight() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    flushing = asyncio.create_task(flush_in_flight())
    try:
        [chunk] = [c async for c in meter.prepare(events)]
    finally:
        flushing.cancel()
    assert chunk.records == 50 and len(chunk.batch) == 150
    assert turns >= 25, f"the flush got {turns} turns during 50 records of decoding"


async def test_the_first_chunks_are_small_and_double_up_to_the_batch() -> None:
    """A started worker commits a small first chunk (its first rows show at once), then
    doubles; every record lands in exactly one chunk, in order."""
    reads: list[int] = []
    events: list[Any] = [Event(Message(0, offset, record(offset, 300), reads)) for offset in range(60)]
    meter = Meter(Settings(batch_charges=5_000), sink=None, dlq_topic=None)  # type: ignore[arg-type]
    chunks = [c async for c in meter.prepare(events)]
    # 1,000 -> 4 records (1,200), 2,000 -> 7, 4,000 -> 14, then 5,000 -> 17 each, the rest last
    assert [c.records for c in chunks] == [4, 7, 14, 17, 17, 1]
    assert [e.message.offset for c in chunks for e in c.events] == list(range(60))
    assert meter.chunk_charges == 5_000  # a later take starts at the full size
