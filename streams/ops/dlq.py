"""Dead letters as an operator handles them: read the DLQ, choose, redrive once, resolve.

The DLQ is read to its end with `read_topic` (the embedded broker's end offsets under-report) and
held in memory: it is small next to the charges topic, and dedup by coordinates needs all of it
anyway. The worker is at-least-once towards the DLQ (a crash or a replay refuses the same input
again), so envelopes with the same (topic, partition, offset, index) are one refusal, handled
once. A redrive sends the payload unchanged, once per letter; `streams.sink.dead_letters` keeps
the state (open, redriven, resolved) in Postgres.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer

from streams.charge import dead_letter as envelope
from streams.charge.dead_letter import DeadLetter
from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options, idempotent_producer
from streams.kafka.topic_reader import read_topic
from streams.output_safety import escape_controls
from streams.sink import dead_letters

#: Reasons a redrive can cure without editing the payload: a relaxed setting, or a key we supply.
CURABLE = frozenset({"future_timestamp", "too_late", "missing_key", "invalid_key"})
#: Header on re-driven records, so a record on the charges topic can be traced back to its refusal.
HEADER = "billing-redrive-of"


@dataclass
class Scan:
    """The DLQ as read: distinct letters in source order, plus what was set aside."""

    letters: list[DeadLetter] = field(default_factory=list)
    copies: Counter[tuple[str, int, int, int | None]] = field(default_factory=Counter)
    unreadable: int = 0  # values that are not an envelope of ours


def where(x: DeadLetter) -> str:
    """`topic[partition]@offset` (+ `#index` for a batch element), as in the worker's log (escaped)."""
    return escape_controls(
        f"{x.topic}[{x.partition}]@{x.offset}" + ("" if x.index is None else f"#{x.index}")
    )


async def scan(settings: Settings) -> Scan:
    """Read the whole DLQ topic, decode envelopes, keep the first copy of each coordinate."""
    out = Scan()
    async for records in read_topic(settings, settings.dlq_topic):
        for record in records:
            try:
                letter = envelope.decode(record.value or b"")
            except (ValueError, KeyError, TypeError, AttributeError):
                out.unreadable += 1
                continue
            out.copies[letter.coordinates] += 1
            if out.copies[letter.coordinates] == 1:
                out.letters.append(letter)
    out.letters.sort(key=lambda x: (x.topic, x.partition, x.offset, -1 if x.index is None else x.index))
    return out


def select(xs: Iterable[DeadLetter], reasons: Iterable[str] = (), **coords: int | None) -> list[DeadLetter]:
    """Letters matching every given filter: reasons, and source `partition`/`offset` (None: any)."""
    wanted, hit = set(reasons), {k: v for k, v in coords.items() if v is not None}
    kept = (x for x in xs if x.reason in wanted or not wanted)
    return [x for x in kept if all(getattr(x, k) == v for k, v in hit.items())]


def redrive_key(letter: DeadLetter) -> bytes | None:
    """The original key; without one (or one that was not UTF-8), the payload's account_id."""
    if letter.key is not None and "\ufffd" not in letter.key:
        return letter.key.encode()
    try:
        body = json.loads(letter.payload)
    except ValueError:
        return None
    items = body if isinstance(body, list) else [body]
    accounts = {x.get("account_id") if isinstance(x, dict) else None for x in items}
    account = accounts.pop() if len(accounts) == 1 else None
    return account.encode() if isinstance(account, str) and account else None


async def send(settings: Settings, chosen: list[tuple[DeadLetter, bytes]], waive: Iterable[str] = ()) -> None:
    """Send payloads as stored, each with its key, and wait until Kafka acknowledged all."""
    headers = [(envelope.WAIVE_HEADER, ",".join(sorted(waive)).encode())] if waive else []
    idempotent = idempotent_producer(settings)
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", enable_idempotence=idempotent)
    topic = settings.charges_topic
    await producer.start()
    try:
        # Never let a send create the topic (Tansu would auto-create it with 4 partitions).
        if topic not in (await producer.client.fetch_all_metadata()).topics():
            raise LookupError(f"topic {topic!r} does not exist")
        futures = []
        for x, key in chosen:
            futures.append(
                await producer.send(topic, x.payload, key, headers=[(HEADER, where(x).encode()), *headers])
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def eligible(
    settings: Settings, letters: list[DeadLetter]
) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
    """The letters a redrive may send (open, complete, younger than the dedup horizon), and the
    others, each with why it is held back."""
    conn = await asyncpg.connect(settings.dsn, timeout=10)
    try:
        known = await dead_letters.states(conn, letters)
    finally:
        await conn.close()
    out: list[DeadLetter] = []
    held: list[tuple[DeadLetter, str]] = []
    for x in letters:
        state = known.get(dead_letters.coordinates(x))
        if state is not None:
            held.append((x, f"already {state}"))
        elif x.truncated:
            held.append((x, "its payload was truncated; redrive it from the charges topic"))
        elif dead_letters.older_than(x, settings.dedup_horizon):
            held.append(
                (
                    x,
                    "refused longer ago than BILLING_DEDUP_HORIZON, so its charge may have counted"
                    " since; check the rows, then `billing dlq resolve` it",
                )
            )
        else:
            out.append(x)
    return out, held


async def count_states(settings: Settings, letters: list[DeadLetter]) -> dict[str, int] | None:
    """How many letters are open, redriven and resolved; None when Postgres cannot say (the
    counts by reason come from the DLQ topic alone and are still worth showing)."""
    try:
        conn = await asyncpg.connect(settings.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        known = await dead_letters.states(conn, letters)
    except asyncpg.UndefinedTableError:  # not migrated yet: no letter was ever redriven
        known = {}
    finally:
        await conn.close()
    out = {"open": 0, "redriven": 0, "resolved": 0}
    for x in letters:
        out[known.get(dead_letters.coordinates(x), "open")] += 1
    return out


async def mark_redriven(settings: Settings, letters: list[DeadLetter]) -> None:
    await mark(settings, letters, "redriven")


async def mark(settings: Settings, letters: list[DeadLetter], state: str) -> None:
    conn = await asyncpg.connect(settings.dsn, timeout=10)
    try:
        await dead_letters.mark(conn, letters, state)
    finally:
        await conn.close()


async def skip(settings: Settings, topic: str, partition: int, offset: int) -> bool:
    """Have the workers dead-letter this record unread; False if it was applied already."""
    conn = await asyncpg.connect(settings.dsn, timeout=10)
    try:
        return await dead_letters.skip(conn, topic, partition, offset)
    finally:
        await conn.close()
