"""The state of dead letters in Postgres, and the operator's skip list.

Letters live in the DLQ topic; what an operator did with them lives here, keyed by the refused
input's coordinates (topic, partition, offset, element index): `open` (no row), `redriven`,
`resolved`. A letter is redriven at most once: the second redrive of a letter whose charge
counted would bill it twice as soon as the dedup horizon has forgotten its key.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from streams.charge.dead_letter import DeadLetter

Coordinates = tuple[str, int, int, int]  # topic, partition, offset, index (-1: the whole record)

STATES = """
SELECT topic, partition, "offset", index, state FROM billing_dead_letters
WHERE (topic, partition, "offset", index) IN (
    SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::integer[]))
"""
MARK = """
INSERT INTO billing_dead_letters (topic, partition, "offset", index, reason, state)
SELECT u.*, $6::text FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::integer[], $5::text[]) AS u
ON CONFLICT (topic, partition, "offset", index) DO UPDATE SET state = EXCLUDED.state, changed_at = now()
"""
SKIP = """
INSERT INTO billing_skips (topic, partition, "offset") VALUES ($1, $2, $3) ON CONFLICT DO NOTHING
"""
FENCE = "SELECT applied_offset FROM billing_partitions WHERE topic = $1 AND partition = $2"


def coordinates(letter: DeadLetter) -> Coordinates:
    return (letter.topic, letter.partition, letter.offset, -1 if letter.index is None else letter.index)


def _columns(letters: Iterable[DeadLetter]) -> list[list[object]]:
    rows = [coordinates(x) for x in letters]
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[], [], [], []]


async def states(conn: asyncpg.Connection, letters: list[DeadLetter]) -> dict[Coordinates, str]:
    """The recorded state of each letter that has one (the others are open)."""
    return {(r[0], r[1], r[2], r[3]): r[4] for r in await conn.fetch(STATES, *_columns(letters))}


async def mark(conn: asyncpg.Connection, letters: list[DeadLetter], state: str) -> None:
    if letters:
        await conn.execute(MARK, *_columns(letters), [x.reason for x in letters], state)


def older_than(letter: DeadLetter, horizon: timedelta, now: datetime | None = None) -> bool:
    """Refused longer ago than `horizon`: the dedup ledger may have forgotten its key."""
    refused = datetime.fromisoformat(letter.rejected_at)
    return (now or datetime.now(UTC)) - refused > horizon


async def skip(conn: asyncpg.Connection, topic: str, partition: int, offset: int) -> bool:
    """Ask the workers to dead-letter this record unread; False when it was applied already."""
    fence = await conn.fetchval(FENCE, topic, partition)
    if fence is not None and fence >= offset:
        return False
    await conn.execute(SKIP, topic, partition, offset)
    return True
