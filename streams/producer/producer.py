"""The producer library: charges onto the `charges` topic, batched per account.

Records follow `streams.charge.records` (one account's charges as a JSON array, key = account_id).
Every delivery is confirmed, retried with capped exponential backoff, and a final failure always
surfaces (future, `flush()`, leaving `async with`), because the seed pipeline's `create_charge`
swallowed errors and lost charges. `send()` pushes back when too much waits to be sent, so a
burst of a million charges is delivered at the broker's pace instead of timing out in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas.charge import Charge
from streams.charge.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_CHARGES,
    OpenRecord,
    SkewCheck,
    encode_charge,
    encode_values,
    set_profile_resolver,
    split_batches,
    to_charge,
)
from streams.config.settings import Settings, get_settings
from streams.errors import BrokerUnavailableError, DeliveryError, FailedRecord
from streams.kafka.client import aiokafka_options, idempotent_producer
from streams.producer.delivery import describe_error, retriable

log = logging.getLogger(__name__)

__all__ = [  # the producer's public vocabulary, some of it defined next door
    "MAX_RECORD_BYTES",
    "MAX_RECORD_CHARGES",
    "BrokerUnavailableError",
    "ChargeProducer",
    "DeliveryError",
    "OpenRecord",
    "encode_charge",
    "set_profile_resolver",
    "split_batches",
    "to_charge",
]


class ChargeProducer:
    """Async producer of charges: `async with ChargeProducer() as p: await p.send(charge)`.

    `send()` returns a future per charge (the charges of one record share it) that resolves to
    aiokafka's RecordMetadata once Kafka acknowledged the record (acks=all), or fails with
    `DeliveryError`. `flush()` and leaving the block wait for every outcome and raise
    `DeliveryError` if any record was given up on. `batch=False`: one JSON object per record.

    A record leaves when it is full or `linger_ms` after its first charge; one sweeper task
    sends the lingered ones, oldest first. When more than `max_buffered_charges` wait in open
    records, `send()` itself sends the oldest before it returns: backpressure at the pace
    aiokafka accepts records, never an unbounded queue of sends that time out.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        batch: bool = True,
        linger_ms: float = 50,
        max_charges: int = MAX_RECORD_CHARGES,
        max_bytes: int = MAX_RECORD_BYTES,
        max_buffered_charges: int = 50_000,
        retries: int = 5,
        retry_backoff_ms: float = 200,
        max_backoff_ms: float = 5_000,
        request_timeout_ms: int = 10_000,
        topic: str | None = None,
        client_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
    ) -> None:
        if retries < 1 or max_charges < 1 or max_buffered_charges < 1:
            raise ValueError("retries, max_charges and max_buffered_charges must be at least 1")
        self.settings = settings or get_settings()
        self.topic = topic or self.settings.charges_topic
        self.batch, self.retries = batch, retries
        self._linger, self._max_bytes = linger_ms / 1000, max_bytes
        self._max_charges = max_charges if batch else 1
        self._max_buffered, self._buffered = max_buffered_charges, 0
        self._backoff_base, self._backoff_cap = retry_backoff_ms / 1000, max_backoff_ms / 1000
        self._request_timeout_ms, self._client_factory = request_timeout_ms, client_factory
        self._client: AIOKafkaProducer | None = None
        self._within_skew = SkewCheck(self.settings.max_clock_skew)
        # By account, one open record each; insertion order is age order (see _sweep).
        self._buffers: dict[str, OpenRecord] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._unsettled: set[asyncio.Future[RecordMetadata]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[FailedRecord] = []
        self.delivered_charges = self.delivered_records = 0

    async def __aenter__(self) -> ChargeProducer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self.close()
        except DeliveryError as err:
            if exc is None:
                raise
            exc.add_note(f"also, closing the producer: {err}")  # the body's error wins, loss shown

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        jitter: float = random.uniform(0.8, 1.2)  # producers do not retry in lockstep
        return float(delay) * jitter

    async def start(self) -> None:
        """Connect, retrying like a delivery; `BrokerUnavailableError` names the bootstrap."""
        options = aiokafka_options(self.settings) | {
            "acks": "all",
            "enable_idempotence": idempotent_producer(self.settings),
            "linger_ms": 5,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": self._request_timeout_ms,
        }
        for attempt in range(1, self.retries + 1):
            client = self._client_factory(**options)
            try:
                await client.start()
                self._client = client
                self._sweeper = asyncio.create_task(self._sweep(), name="charge-producer-linger")
                return
            except Exception as exc:  # KafkaConnectionError mostly; OSError can leak through
                with contextlib.suppress(Exception):
                    await client.stop()
                if attempt == self.retries:
                    raise BrokerUnavailableError(
                        f"cannot reach Kafka at {self.settings.kafka_bootstrap} "
                        f"({attempt} attempts): {describe_error(exc)}"
                    ) from None
            await asyncio.sleep(self._backoff(attempt))

    def _new_future(self) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self._unsettled.add(future)
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: asyncio.Future[RecordMetadata]) -> None:
        self._unsettled.discard(future)
        _ = future.cancelled() or future.exception()  # retrieved: flush() reports it, not asyncio

    async def send(self, charge: Charge | Mapping[str, Any]) -> asyncio.Future[RecordMetadata]:
        """Validate and queue one charge; await the returned future for its delivery. A Charge is
        valid by construction: only its date is checked (against a cached horizon, `SkewCheck`)."""
        if self._client is None:
            raise RuntimeError("ChargeProducer is not started: use `async with ChargeProducer(...)`")
        valid = charge if isinstance(charge, Charge) else to_charge(charge)
        values = valid.__dict__  # read once for the date check, the key and the encoding
        if values["occurred_at"] > self._within_skew.horizon:
            self._within_skew(valid)
        part, account = encode_values(values), values["account_id"]
        rec = self._buffers.get(account)
        if rec is None or not rec.take(part, self._max_charges, self._max_bytes):
            if rec is not None:
                await self._emit(rec)
            rec = OpenRecord(account, self._new_future(), not self.batch, asyncio.get_running_loop().time())
            self._buffers[account] = rec
            self._wake.set()
            rec.take(part, self._max_charges, self._max_bytes)
        self._buffered += 1
        future = rec.future
        if len(rec.parts) >= self._max_charges:
            await self._emit(rec)
        while self._buffered > self._max_buffered:
            await self._emit(next(iter(self._buffers.values())))
        return future  # type: ignore[no-any-return]

    async def send_and_wait(self, charge: Charge | Mapping[str, Any]) -> RecordMetadata:
        """Send one charge and wait until Kafka has it (the linger, then the round trip)."""
        return await asyncio.shield(await self.send(charge))

    async def _sweep(self) -> None:
        """Send each record once its linger has passed. Records enter `_buffers` in the order
        they open (an emitted key that opens again goes to the end), so the first is the oldest
        and one sleep covers all: no timer or task per record, and one send at a time."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffers:
                self._wake.clear()
                await self._wake.wait()
                continue
            oldest = next(iter(self._buffers.values()))
            wait = oldest.opened_at + self._linger - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self._emit(oldest)
            except Exception:  # _start_record settles every failure; this is a bug, keep going
                log.exception("charge producer: sending a lingered record failed unexpectedly")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, rec: OpenRecord) -> None:
        if self._buffers.get(rec.account) is not rec:
            return  # already emitted by a size limit, the sweeper, backpressure or flush()
        del self._buffers[rec.account]
        self._buffered -= len(rec.parts)
        await self._start_record(rec)

    async def _start_record(self, rec: OpenRecord, delay: float = 0.0) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            rec.attempts += 1
            if self._client is None:
                raise RuntimeError("producer closed")
            ack = await self._client.send(self.topic, rec.value(), key=rec.key)
        except asyncio.CancelledError:
            self._fail(rec, "cancelled before Kafka accepted the record")
            raise
        except Exception as exc:
            self._retry_or_fail(rec, exc)
            return
        ack.add_done_callback(lambda done: self._acked(rec, done))

    def _acked(self, rec: OpenRecord, ack: asyncio.Future[RecordMetadata]) -> None:
        if ack.cancelled():
            self._fail(rec, "delivery cancelled (producer closing)")
        elif (exc := ack.exception()) is not None:
            self._retry_or_fail(rec, exc)
        else:
            self.delivered_records += 1
            self.delivered_charges += len(rec.parts)
            if rec.future is not None and not rec.future.done():
                rec.future.set_result(ack.result())

    def _retry_or_fail(self, rec: OpenRecord, exc: BaseException) -> None:
        if rec.attempts >= self.retries or not retriable(exc) or self._client is None:
            self._fail(rec, describe_error(exc))
        else:
            log.info(
                "retrying a record for key %r (attempt %d): %s", rec.key, rec.attempts, describe_error(exc)
            )
            self._spawn(self._start_record(rec, self._backoff(rec.attempts)))

    def _fail(self, rec: OpenRecord, error: str) -> None:
        failure = FailedRecord(rec.key, rec.value(), len(rec.parts), f"{error} (attempts: {rec.attempts})")
        self._failures.append(failure)
        log.debug("%d charges for key %r not delivered: %s", failure.charges, rec.key, failure.error)
        if rec.future is not None and not rec.future.done():
            rec.future.set_exception(DeliveryError(f"charge not delivered: {failure.error}", [failure]))

    async def flush(self) -> None:
        """Send everything buffered, wait for every outcome, raise `DeliveryError` if any failed."""
        for rec in list(self._buffers.values()):
            await self._emit(rec)
        while self._unsettled or self._tasks:
            await asyncio.wait({*self._unsettled, *self._tasks})
        if self._failures:
            failures, self._failures = self._failures, []
            lost = sum(f.charges for f in failures)
            raise DeliveryError(
                f"{lost} charges in {len(failures)} records not delivered to {self.topic!r}; "
                f"last error: {failures[-1].error}",
                failures,
            )

    async def close(self) -> None:
        """Flush, then disconnect. Whatever was not delivered is raised, never dropped quietly."""
        try:
            if self._client is not None:
                await self.flush()
        finally:
            sweeper, self._sweeper = self._sweeper, None
            if sweeper is not None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            for rec in list(self._buffers.values()):  # only left when flush() was interrupted
                del self._buffers[rec.account]
                self._buffered -= len(rec.parts)
                self._fail(rec, "producer closed before sending")
            client, self._client = self._client, None
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if client is not None:
                await client.stop()
