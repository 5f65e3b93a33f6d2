"""After every assignment, move back each charges partition that would resume past a charge
not yet billed (the rule and why: `streams.rules.resume`).

It runs right after Faust's own seek to the committed offsets, before records flow. The fences
come from Postgres; when it does not answer in time (down, or the sink busy retrying a flush),
the committed offsets alone decide, which still covers a partition without one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.config.settings import Settings
from streams.rules.resume import rewinds
from streams.sink.postgres import PostgresSink

log = logging.getLogger("streams.worker")

# How long an assignment waits for the fences before the committed offsets decide alone.
FENCE_WAIT_SECONDS = 10.0


class ResumeGuard:
    """Called with Faust's consumer once it has sought to the committed offsets."""

    def __init__(self, settings: Settings, sink: PostgresSink) -> None:
        self.topic = settings.charges_topic
        self.sink = sink

    async def __call__(self, consumer: Any) -> None:
        tps = {tp.partition: tp for tp in consumer.assignment() if tp.topic == self.topic}
        if not tps:
            return
        try:
            firsts = await asyncio.wait_for(self.sink.first_unapplied(sorted(tps)), FENCE_WAIT_SECONDS)
        except TimeoutError:
            log.warning(
                "postgres did not tell the fences of %s within %.0fs: partitions resume at their "
                "committed offsets, or their start where the group has none",
                self.topic,
                FENCE_WAIT_SECONDS,
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
                "fence + 1" if committed.get(tps[partition]) else "partition's start: no committed offset",
                offset,
            )
            await consumer.seek(tps[partition], offset)
