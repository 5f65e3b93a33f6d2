"""Faust's Kafka consumer with what Faust does not expose: how long a fetch may wait, and a
hook after its seek to the committed offsets (where `streams.worker.resume` moves partitions back).

A consumer's fetch asks the broker for records and lets it hold the request up to a maximum
wait when it has none. Kafka answers a held fetch as soon as a record arrives, so the wait
only bounds how often an idle consumer asks again. The embedded broker (Tansu) does not: a
record produced while a fetch is held waits in the broker until the wait runs out. Faust
hard-codes 1.5 s (faust-streaming 0.15), which added up to that much to every charge's path to
its provisional row. Measured with a bare aiokafka consumer on the embedded broker: produce to
fetched took 67-657 ms with a 1.5 s wait and 2-48 ms with 0.1 s.

`BillingApp` is `faust.App` whose worker consumer takes `BILLING_KAFKA_FETCH_MAX_WAIT`
(`Settings.fetch_max_wait`: 0.1 s on a loopback broker, Faust's 1.5 s elsewhere). Everything
else is Faust's own code path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher in start(); Faust passed its constant above.
        consumer._fetch_max_wait_ms = cast(BillingApp, self.app).fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        guard = cast(BillingApp, self.app).after_seek
        if guard is not None:
            await guard(self)


class _Transport(driver.Transport):
    Consumer = _Consumer


class BillingApp(faust.App):
    """`faust.App` whose worker consumer's fetches wait at most `fetch_max_wait_ms`, and which
    runs `after_seek` with the consumer each time Faust has sought to the committed offsets
    (`streams.worker.resume`)."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.after_seek: Callable[[Any], Awaitable[None]] | None = None
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
