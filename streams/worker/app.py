"""The Faust application: consume charges, route bad input to the DLQ, flush batches to the sink.

The agent is deliberately thin. It takes records without acknowledging them
(`noack_take`), hands them to `Meter`, and acknowledges them only after the sink has committed
their effect, so Faust never commits an offset whose charges are not in Postgres. Nothing a
record contains can raise out of `Meter.handle`; an error that does escape (Postgres refusing
the schema, a bug) stops the worker with the batch unacknowledged, to be processed again after
the fix, instead of Faust's default of acknowledging the event and moving on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import EventT

from streams import crashpoints
from streams.config.settings import Settings
from streams.kafka.client import ssl_context
from streams.sink.postgres import PostgresSink
from streams.worker import web
from streams.worker.closing import DayCloser, LogEnds
from streams.worker.memory import release_free_memory
from streams.worker.meter import Meter, Prepared
from streams.worker.metrics import Metrics
from streams.worker.resume import ResumeGuard
from streams.worker.table_manager import ImmediateTableManager
from streams.worker.transport import BillingApp

log = logging.getLogger("streams.worker")


@dataclass
class Outcome:
    """Why the worker stopped itself, if it did: `run_worker` turns it into the exit status."""

    fatal: str | None = None


def _stop_worker(outcome: Outcome, reason: BaseException) -> None:
    """Stop the whole worker (graceful: what was acknowledged gets committed, nothing else).

    SIGTERM is how a Faust worker is stopped cleanly from inside (the same path as a supervisor's
    stop); `outcome` tells the caller it was a fatal error, not a request to stop."""
    log.critical("stopping the worker, batch left unacknowledged: %s", reason)
    outcome.fatal = type(reason).__name__
    os.kill(os.getpid(), signal.SIGTERM)


def app_options(settings: Settings) -> dict[str, Any]:
    """Faust settings from ours: broker, credentials, web binding, group timing."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "broker_credentials": _credentials(settings)
        if settings.kafka_security_protocol != "PLAINTEXT"
        else None,
        "datadir": str(settings.data_dir / "faust"),
        **web.app_web_settings(settings),
        "broker_session_timeout": settings.group_session_timeout.total_seconds(),
        "broker_heartbeat_interval": settings.group_heartbeat_interval.total_seconds(),
        "consumer_group_instance_id": settings.kafka_group_instance_id,
        "TableManager": ImmediateTableManager,
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
    }


def charges_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """The charges topic as raw bytes: decoding is ours, so a bad record can never crash Faust."""
    return app.topic(
        settings.charges_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def create_app(settings: Settings, outcome: Outcome | None = None) -> faust.App:
    """A Faust app with the metering agent and the day-closing timer; a fatal error is recorded
    in `outcome`."""
    outcome = outcome if outcome is not None else Outcome()
    app = BillingApp(
        settings.app_id,
        fetch_max_wait_ms=int(settings.fetch_max_wait.total_seconds() * 1000),
        **app_options(settings),
        topic_allow_declare=False,
        producer_acks=-1,
        stream_wait_empty=False,
    )
    charges = charges_topic(app, settings)
    dlq_topic = app.topic(
        settings.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    metrics = Metrics()
    sink = PostgresSink(settings, on_retry=metrics.on_retry)
    meter = Meter(settings, sink, dlq_topic, metrics)
    app.after_seek = ResumeGuard(settings)
    web.install(app, settings, sink, metrics)
    flush_seconds = settings.flush_interval.total_seconds()

    @app.task
    async def connect_sink() -> None:
        await sink.start()
        meter.skips = await sink.skips()

    async def commit_then_ack(stream: faust.StreamT[Any], chunk: Prepared) -> None:
        try:
            await meter.commit(chunk)
        except Exception as exc:
            _stop_worker(outcome, exc)
            raise
        crashpoints.reached("after_flush_before_ack")
        for event in chunk.events:
            await stream.ack(event)

    @app.agent(charges, name="meter", concurrency=1)
    async def meter_agent(stream: faust.StreamT[Any]) -> None:
        # Two stages: while chunk k commits in Postgres, chunk k+1 is taken and decoded here.
        # Commits stay in order and each acknowledges its records only after its COMMIT.
        committing: asyncio.Task[None] | None = None
        chunk: Prepared | None = None
        try:
            # Half the interval: a charge waits at most that for its batch, plus the flush itself.
            take = cast("faust.Stream[Any]", stream).noack_take  # not declared on StreamT
            async for events in take(settings.batch_records, within=flush_seconds / 2):
                chunks = meter.prepare(cast("Sequence[EventT[Any]]", events))  # it yields events
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        _stop_worker(outcome, exc)
                        raise
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(commit_then_ack(stream, chunk))
                # Let go of this take before waiting for the next: its records (up to
                # batch_records of them, tens of kilobytes each) would otherwise stay alive as
                # long as the stream is idle. The commit in flight holds its own chunk.
                del events, chunks
                chunk = None
        finally:
            if committing is not None and not committing.done():
                committing.cancel()

    closer = DayCloser(settings, sink, LogEnds(settings))

    @app.timer(interval=max(flush_seconds, 1.0))
    async def close_days() -> None:
        try:
            await closer.tick()
        except Exception as exc:
            _stop_worker(outcome, exc)
            raise
        metrics.set_unread(closer.lag, range(settings.partitions))

    @app.timer(interval=max(flush_seconds, 1.0))
    async def load_skips() -> None:
        meter.skips = await sink.skips()

    @app.timer(interval=max(flush_seconds, 1.0))
    async def return_memory() -> None:
        # After a burst the freed heap would stay resident (see streams.worker.memory).
        release_free_memory()

    @app.timer(interval=600.0)
    async def purge_dedup_keys() -> None:
        purged = await sink.purge_seen()
        if purged:
            log.info("forgot %d idempotency keys older than the dedup horizon", purged)

    return app


def _credentials(settings: Settings) -> Any:
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
