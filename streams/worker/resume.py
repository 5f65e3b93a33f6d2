"""After every assignment, move back each charges partition that would resume past a charge
not yet billed (the rule and why: `streams.rules.resume`).

It runs right after Faust's own seek to the committed offsets, before records flow. The fences
come from Postgres on a connection of this module's own: Faust cancels a seek when the group
rebalances again, and a statement cancelled on the sink's connection would leave that
connection unusable for the flush after it. When Postgres does not answer in time, the
committed offsets alone decide, which still covers a partition without one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.config.settings import Settings
from streams.rules.resume import rewinds
from streams.sink import pg, sql

log = logging.getLogger("streams.worker")

# How long an assignment waits for the fences before the committed offsets decide alone.
FENCE_WAIT_SECONDS = 10.0


async def first_unapplied(settings: Settings, partitions: list[int]) -> dict[int, int]:
    """`fence + 1` of each partition: 0 for one without a row yet (nothing of it applied;
    the sink adds the rows when it first connects, which may come after an assignment)."""
    conn = await pg.connect(settings)
    try:
        rows = await conn.fetch(sql.FIRST_UNAPPLIED, settings.charges_topic, partitions)
        return {**dict.fromkeys(partitions, 0), **{r[0]: r[1] for r in rows}}
    finally:
        conn.terminate()  # never awaits: safe when this is cancelled


class ResumeGuard:
    """Called with Faust's consumer once it has sought to the committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.charges_topic

    async def __call__(self, consumer: Any) -> None:
        tps = {tp.partition: tp for tp in consumer.assignment() if tp.topic == self.topic}
        if not tps:
            return
        try:
            firsts = await asyncio.wait_for(first_unapplied(self.settings, sorted(tps)), FENCE_WAIT_SECONDS)
        except Exception as exc:  # down, refusing, slow: the fallback below is safe whatever it was
            log.warning(
                "could not read the fences of %s (%s): partitions resume at their committed "
                "offsets, or their start where the group has none",
                self.topic,
                type(exc).__name__,
            )
            firsts = {}
        # Set by Faust's seek just before this runs; only offsets above 0 are recorded.
        committed = consumer._committed_offset
        positions = {p: await consumer.position(tp) for p, tp in tps.items()}
        moves = rewinds(positions, {p: committed.get(tp) for p, tp in tps.items()}, firsts)
        for partition, offset in sorted(moves.items()):
            log.warning(
                "partition %d of %s would resume at offset %s, past %d (the %s): reading from %d "
                "again, and what was applied already is skipped",
                partition,
                self.topic,
                positions[partition],
                offset,
                _why(offset, committed.get(tps[partition]), firsts.get(partition)),
                offset,
            )
            await consumer.seek(tps[partition], offset)


def _why(offset: int, committed: int | None, first: int | None) -> str:
    if not committed:
        return "partition's start: no committed offset"
    return "fence + 1" if offset == first else "committed offset"
