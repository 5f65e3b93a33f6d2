"""The meter: Kafka events in, dead letters and one durable sink flush out.

It decodes a take of records lazily, chunk by chunk, routes every refusal to the DLQ (durable
before the source offset may be acknowledged), and flushes each chunk in one Postgres
transaction. When Postgres refuses a value, it finds the record to blame by halving the chunk
and dead-letters it, so no single record can stop the worker. The Faust agent around it
(`streams.worker.app`) only acknowledges what `commit` returned from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faust.types import EventT, Message, RecordMetadata, TopicT

from streams import crashpoints
from streams.charge import dead_letter as dlq
from streams.charge.dead_letter import waived_rules
from streams.charge.decode import Limits, Rejection, element_bytes
from streams.config.settings import Settings
from streams.errors import SinkDataError
from streams.rules.batch import Batch, record_fingerprint
from streams.rules.fast_decode import add_to_batch
from streams.rules.pending import PendingCharge
from streams.sink.postgres import PostgresSink
from streams.sink.rows import FlushResult
from streams.worker.metrics import Metrics

log = logging.getLogger("streams.worker")

# Seconds of decoding between two turns of the event loop: each statement of a flush in flight
# waits at most this long for its turn, at a cost of one loop turn per interval.
YIELD_EVERY = 0.002
# A worker's first chunk is small and the chunks double up to batch_charges: after a start (or a
# restart after a crash) the first rows are visible within one small transaction instead of
# after a whole batch is decoded and written into a cold table, and the steady state is unchanged.
FIRST_CHUNK_CHARGES = 1000


@dataclass(slots=True)
class Prepared:
    """Decoded records waiting for their Postgres transaction, and the events to ack after it."""

    batch: Batch
    events: list[EventT[Any]] = field(default_factory=list)
    deliveries: list[Awaitable[RecordMetadata]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.events)


class Meter:
    """Turns a list of Kafka events into DLQ records and one durable sink flush."""

    def __init__(
        self, settings: Settings, sink: PostgresSink, dlq_topic: TopicT, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.dlq_topic = dlq_topic
        self.metrics = metrics or Metrics()
        self.stats: dict[str, int] = {"records": 0, "charges": 0, "duplicates": 0, "dlq": 0}
        self.dlq_by_reason: dict[str, int] = {}
        self.skips: set[tuple[int, int]] = set()  # (partition, offset) an operator chose to skip
        self.chunk_charges = min(FIRST_CHUNK_CHARGES, settings.batch_charges)

    def limits(self, message: Message) -> Limits:
        """The time rules for one record, from the record alone: its timestamp (the broker's
        append time where the topic is stamped so) and the rules an operator waived on it."""
        s = self.settings
        stamp = message.timestamp
        now = datetime.fromtimestamp(stamp, UTC) if stamp else datetime.now(UTC)
        return Limits.for_record(now, s.max_clock_skew, s.zone, waived_rules(message.headers))

    async def prepare(self, events: Sequence[EventT[Any]]) -> AsyncIterator[Prepared]:
        """Decode and validate, starting the DLQ sends; yields chunks of at most batch_charges
        charges (smaller ones first, see FIRST_CHUNK_CHARGES), each decoded only when the caller
        asks for it, so that a take of large records never holds more than the chunk being
        decoded and the one committing. Nothing is durable yet (see `commit`)."""
        current = Prepared(Batch(self.settings.zone))
        clock = time.perf_counter
        yielded = clock()
        for event in events:
            if clock() - yielded > YIELD_EVERY:
                # Decoding is CPU work on the event loop: let the previous chunk's flush send its
                # next statement, so Postgres works while this chunk decodes instead of after.
                await asyncio.sleep(0)
                yielded = clock()
            message = event.message
            where = (message.partition, message.offset)
            fingerprint = (
                record_fingerprint(message.key, message.value, message.timestamp)
                if message.offset == 0
                else None
            )
            if where in self.skips:
                value = message.value or b""
                taken = current.batch.add_record(*where, (), None, fingerprint, key=message.key, value=value)
                rejections = [Rejection("skipped", "skipped by an operator", None, value)] if taken else []
            else:
                accept_late = "too_late" in waived_rules(message.headers)
                rejections = add_to_batch(
                    current.batch,
                    *where,
                    message.key,
                    message.value,
                    self.limits(message),
                    fingerprint,
                    accept_late,
                )
            for rejection in rejections:  # a record delivered twice in one take has none
                current.deliveries.append(await self._dead_letter(message, rejection))
                current.reasons.append(rejection.reason)
            current.events.append(event)
            if len(current.batch) >= self.chunk_charges:  # bounds the worker's memory
                yield current
                current = Prepared(Batch(self.settings.zone))
                self.chunk_charges = min(2 * self.chunk_charges, self.settings.batch_charges)
        if current.events:
            yield current

    async def commit(self, chunk: Prepared) -> None:
        """Make one prepared chunk durable; returns once it is committed."""
        if chunk.deliveries:
            # The DLQ copy must be durable before its source offset may be acknowledged.
            await asyncio.gather(*chunk.deliveries)
            crashpoints.reached("after_dlq_before_flush")  # letters durable, their records unacked
        for reason in chunk.reasons:  # counted once durable, like the charges below
            self.metrics.observe_dlq(reason)
        started = time.monotonic()
        batch = chunk.batch
        result = await self._flush_isolating(batch)
        self.metrics.observe_flush(chunk.records, batch, result, time.monotonic() - started)
        self.stats["records"] += chunk.records
        self.stats["charges"] += result.charges
        self.stats["duplicates"] += result.duplicates
        self.stats["dlq"] += len(chunk.deliveries)
        if result.charges:
            log.debug(
                "flushed %d charges (%d duplicates) into %d rows in %.3fs",
                result.charges,
                result.duplicates,
                result.rows_written,
                result.seconds,
                extra={"partitions": sorted(batch.marks)},
            )

    async def _flush_isolating(self, batch: Batch) -> FlushResult:
        """Flush; when Postgres refuses a value, find the record to blame by halving the batch,
        dead-letter it (reason `postgres_refused`) and commit the others, so no single record
        can stop the worker."""

        async def refuse(charges: list[PendingCharge]) -> None:
            await self._refuse(
                batch, charges, "too_late", "its day had been closed for the whole late horizon"
            )

        try:
            return await self.sink.flush(batch, refuse)
        except SinkDataError as exc:
            records = sorted(batch.records)
            if len(records) == 1:
                partition, offset = records[0]
                log.warning(
                    "postgres refused a value of %s[%d]@%d (%s): dead-lettered",
                    self.settings.charges_topic,
                    partition,
                    offset,
                    exc,
                )
                await self._refuse(batch, None, "postgres_refused", str(exc))
                return await self.sink.flush(
                    batch.without({(r.partition, r.offset, r.position) for r in batch.rows}), refuse
                )
            half = len(records) // 2
            first = await self._flush_isolating(batch.only(set(records[:half])))
            second = await self._flush_isolating(batch.only(set(records[half:])))
            return FlushResult.total([first, second])

    async def _refuse(
        self, batch: Batch, charges: list[PendingCharge] | None, reason: str, detail: str
    ) -> None:
        """Dead-letter charges decided at flush time (or a whole record), durably."""
        letters: list[tuple[int, int, int | None, bytes | None, bytes]] = []
        if charges is None:
            [(partition, offset)] = batch.records
            source = batch.records[(partition, offset)]
            letters.append((partition, offset, None, source.key, source.value))  # the whole record
        else:
            for c in charges:
                source = batch.records[(c.partition, c.offset)]
                letters.append(
                    (c.partition, c.offset, c.position, source.key, element_bytes(source.value, c.position))
                )
        sends = []
        for partition, offset, index, key, payload in letters:
            letter = dlq.make_dead_letter(
                reason=reason,
                detail=detail,
                topic=self.settings.charges_topic,
                partition=partition,
                offset=offset,
                index=index,
                key=key,
                payload=payload,
            )
            log.warning(
                "rejected %s[%d]@%d%s: %s",
                letter.topic,
                partition,
                offset,
                "" if index is None else f" element {index}",
                reason,
                extra={"topic": letter.topic, "partition": partition, "offset": offset, "reason": reason},
            )
            self.dlq_by_reason[reason] = self.dlq_by_reason.get(reason, 0) + 1
            sends.append(await self.dlq_topic.send(key=key, value=dlq.encode(letter)))
        await asyncio.gather(*sends)
        for _ in sends:
            self.metrics.observe_dlq(reason)
        self.stats["dlq"] += len(sends)

    async def _dead_letter(self, message: Message, rejection: Rejection) -> Awaitable[RecordMetadata]:
        """Send the letter; the returned awaitable resolves once Kafka acknowledged it."""
        letter = dlq.make_dead_letter(
            reason=rejection.reason,
            detail=rejection.detail,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            index=rejection.index,
            key=message.key,
            payload=rejection.payload,
        )
        # Coordinates and reason only: the payload stays in the DLQ, never in the log.
        log.warning(
            "rejected %s[%d]@%d%s: %s",
            message.topic,
            message.partition,
            message.offset,
            "" if rejection.index is None else f" element {rejection.index}",
            rejection.reason,
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "reason": rejection.reason,
            },
        )
        self.dlq_by_reason[rejection.reason] = self.dlq_by_reason.get(rejection.reason, 0) + 1
        return await self.dlq_topic.send(key=message.key, value=dlq.encode(letter))
