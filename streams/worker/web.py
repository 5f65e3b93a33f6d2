"""The worker's HTTP surface: /metrics, /health, /ready, and nothing that exposes data.

Why these answers:
- /health is 200 whenever the event loop answers: an orchestrator restarts the process only
  when it is wedged or gone, never because Kafka or Postgres is away (a restart would not help
  and would throw away the batch being retried).
- /ready is 200 only once the group has given this worker its assignment and Faust has finished
  recovering after the latest rebalance, and while the sink holds a Postgres connection. It goes
  503 during a rebalance and while Postgres is unreachable, so a rollout waits for a worker that
  can actually make progress, and an alert can watch `billing_ready`. A worker that received an
  empty assignment (more workers than partitions) is ready: it is a hot standby.

Faust's own built-in pages are switched off in `app_web_settings` (the /table views expose
table data, /router the cluster's topology, the stats pages internal state); only its plain
`/` status page and the pages registered here remain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from streams.charge.windows import day_end
from streams.config.settings import Settings
from streams.sink.postgres import PostgresSink
from streams.worker.metrics import FAUST_PREFIX, Metrics

log = logging.getLogger("streams.worker.web")
REFRESH_SECONDS = 5.0  # lag, open days and readiness gauges


def app_web_settings(settings: Settings) -> dict[str, Any]:
    """faust.App keyword arguments for the web server: our host/port, built-in views off."""
    return {
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_stats_enabled": False,
        "web_graph_enabled": False,
        "web_metrics_enabled": False,
    }


class Readiness:
    """What /ready answers, from Faust's rebalance signals and the sink's connection."""

    def __init__(self, app: faust.App, settings: Settings, sink: PostgresSink) -> None:
        self.app = app
        self.topic = settings.charges_topic
        self.sink = sink
        self.recovered = False

    def partitions(self) -> list[int]:
        """Partitions of the charges topic this worker owns now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not created or already closed
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.topic)

    def state(self) -> tuple[bool, dict[str, Any]]:
        postgres = self.sink.healthy
        body = {
            "ready": self.recovered and postgres,
            "assigned": self.recovered,
            "partitions": len(self.partitions()),
            "postgres": postgres,
        }
        return bool(body["ready"]), body


def install(app: faust.App, settings: Settings, sink: PostgresSink, metrics: Metrics) -> Readiness:
    """Register the pages, the Prometheus sensor, the rebalance signals and the gauge refresher."""
    readiness = Readiness(app, settings, sink)
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry, name_prefix=FAUST_PREFIX)

    @app.page("/health")
    async def health(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "alive"})

    @app.page("/ready")
    async def ready(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        ok, body = readiness.state()
        return web.json(body, status=200 if ok else 503)

    # Evaluated at each scrape, so they are right even while a timer waits on Postgres.
    metrics.ready.set_function(lambda: 1.0 if readiness.state()[0] else 0.0)
    metrics.pg_up.set_function(lambda: 1.0 if sink.connected else 0.0)
    metrics.assigned.set_function(lambda: float(len(readiness.partitions())))

    # Faust declares its receivers narrower than it calls them: the ignores below say so.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", ())
        readiness.recovered = False
        metrics.forget_partitions({tp.partition for tp in revoked if tp.topic == settings.charges_topic})

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_complete(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        readiness.recovered = True
        log.info(
            "assignment complete: %d partitions of %s", len(readiness.partitions()), settings.charges_topic
        )

    @app.timer(interval=REFRESH_SECONDS)
    async def refresh_lag() -> None:
        await _refresh_lag(app, readiness, metrics)

    @app.timer(interval=REFRESH_SECONDS)
    async def refresh_days() -> None:
        # Waits (in the sink's retries) while Postgres is away; the other gauges do not depend on it.
        if sink.connected:
            await _refresh_days(settings, sink, metrics)

    return readiness


async def _refresh_lag(app: faust.App, readiness: Readiness, metrics: Metrics) -> None:
    """Lag = end offset - next offset to apply (ours once flushed, else the consumer position).

    On real Kafka the end offset is exact. On Tansu it is the base offset of the last record
    batch + 1, so the lag reads low there, down to 0 while records remain.
    """
    partitions = readiness.partitions()
    if not partitions:
        return
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic == readiness.topic]
    try:
        ends = await asyncio.wait_for(consumer.highwaters(*tps), REFRESH_SECONDS)
        for tp in tps:
            end = ends.get(tp)
            applied = metrics.applied(tp.partition)
            position = applied + 1 if applied is not None else await consumer.position(tp)
            if end is not None and position is not None:
                metrics.set_lag(tp.partition, int(end), int(position))
    except Exception as exc:  # lag is best effort: a broker hiccup must not stop the worker
        log.debug("consumer lag not refreshed: %s", type(exc).__name__)


async def _refresh_days(settings: Settings, sink: PostgresSink, metrics: Metrics) -> None:
    try:
        open_days, closed = await sink.day_status()
    except Exception as exc:  # a fatal Postgres error shows in the flush path; keep the timer alive
        log.warning("open days not refreshed: %s", type(exc).__name__)
        return
    final_until = day_end(closed, settings.zone).timestamp() if closed is not None else None
    metrics.set_days(open_days, final_until, time.time())
