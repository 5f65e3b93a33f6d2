"""The app factory of `billing api`: routes, shared connections, limits, health and metrics.

Why these choices:
- One Kafka producer and one small Postgres pool per process, opened in the lifespan. The
  producer connects in the background with retries: the service starts (and /health answers)
  while Kafka is away, /ready says 503 and ingest answers 503 until it is there.
- Concurrency is bounded here (BILLING_API_MAX_CONCURRENCY requests at once, the rest 503 with
  Retry-After at once) rather than queued: a queue in front of Kafka would only turn overload
  into timeouts that the client cannot tell from a lost request.
- /health is the event loop answering; /ready is Kafka connected and Postgres answering. Both
  and /metrics need no key and show no billing data.
- The access log carries method, route template, status, duration and the key's public id;
  never the Authorization header or a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.api import ingest, query
from streams.api.auth import KeyCache
from streams.api.errors import ApiError, ErrorBody, api_error_handler, retry_after, validation_error_handler
from streams.api.metrics import ApiMetrics
from streams.config import Settings
from streams.delivery import DeliveryError
from streams.producer import ChargeProducer

log = logging.getLogger("streams.api")
access = logging.getLogger("streams.api.access")
PUBLIC = frozenset({"/health", "/ready", "/metrics"})
PRODUCER_OPTIONS: dict[str, Any] = {"linger_ms": 2, "retries": 3, "request_timeout_ms": 5_000}


@dataclass
class Service:
    """What every request shares (app.state.service)."""

    settings: Settings
    metrics: ApiMetrics
    pool: asyncpg.Pool | None = None
    keys: KeyCache | None = None
    producer: ChargeProducer | None = None
    slots: asyncio.Semaphore | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def reap_failures(self) -> None:
        """See `ingest.reap`: one collector at a time is enough."""
        if self.producer is not None and not any(t.get_name() == "api-reap-failures" for t in self.tasks):
            self._keep(ingest.reap(self.producer))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect_kafka(self) -> None:
        """Start the producer, retrying until Kafka answers (the service is up meanwhile)."""
        while True:
            producer = ChargeProducer(self.settings, **PRODUCER_OPTIONS)
            try:
                await producer.start()
            except DeliveryError as exc:
                log.warning("api: Kafka not reachable yet, retrying: %s", exc)
                await asyncio.sleep(self.settings.api_retry_after.total_seconds())
                continue
            self.producer = producer
            log.info("api: connected to Kafka at %s", self.settings.kafka_bootstrap)
            return

    async def ready(self) -> dict[str, bool]:
        postgres = False
        if self.pool is not None:
            with contextlib.suppress(Exception):
                postgres = await asyncio.wait_for(self.pool.fetchval("SELECT true"), 2) is True
        return {"kafka": self.producer is not None, "postgres": postgres}

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.producer is not None:
            with contextlib.suppress(DeliveryError):
                await self.producer.close()
        if self.pool is not None:
            await self.pool.close()


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; `uvicorn.run(create_app(settings))` serves it."""
    service = Service(settings, ApiMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.slots = asyncio.Semaphore(settings.api_max_concurrency)
        service.pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=4, command_timeout=30)
        service.keys = KeyCache(service.pool, settings.api_key_cache.total_seconds())
        service._keep(asyncio.create_task(service.connect_kafka(), name="api-connect-kafka"))
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="billing-streams API",
        version="1",
        description="Send LLM usage charges and read exact daily usage. "
        "Authenticate with `Authorization: Bearer <key>` (`billing keys create`).",
        lifespan=lifespan,
    )
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(ingest.component_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(ingest.router)
    app.include_router(query.router)

    @app.middleware("http")
    async def bounded_and_measured(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        slots = service.slots
        assert slots is not None
        started = time.perf_counter()
        if slots.locked() and request.url.path not in PUBLIC:
            body = ErrorBody(error="overloaded", message="too many requests at once; retry shortly")
            response: Response = JSONResponse(
                body.model_dump(),
                status_code=503,
                headers=retry_after(settings.api_retry_after.total_seconds()),
            )
        else:
            async with slots:
                service.metrics.in_flight.inc()
                try:
                    response = await call_next(request)
                finally:
                    service.metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        route = _route_of(request)
        service.metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        service.metrics.latency.labels(route).observe(elapsed)
        access.info(
            "%s %s %d %.1fms",
            request.method,
            route,
            response.status_code,
            elapsed * 1000,
            extra={
                "route": route,
                "status": response.status_code,
                "key_id": getattr(request.state, "key_id", None),
            },
        )
        return response

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        parts = await service.ready()
        ok = all(parts.values())
        return JSONResponse({"ready": ok, **parts}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
