"""The app factory of `billing api`: routes, shared connections, limits, health and metrics.

Why these choices:
- One Kafka producer and one small Postgres pool per process, opened in the lifespan. The
  producer connects in the background with retries: the service starts (and /health answers)
  while Kafka is away, /ready says 503 and ingest answers 503 until it is there.
- Concurrency, metrics and the access log are the guard's (streams.api.middleware).
- /health is the event loop answering; /ready is Kafka connected and Postgres answering. Both
  and /metrics need no key and show no billing data.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.api import ingest, query
from streams.api.auth import KeyCache
from streams.api.errors import api_error_handler, validation_error_handler
from streams.api.metrics import ApiMetrics
from streams.api.middleware import Guard
from streams.config.settings import Settings
from streams.errors import ApiError, DeliveryError
from streams.producer.producer import ChargeProducer

log = logging.getLogger("streams.api")
PRODUCER_OPTIONS: dict[str, Any] = {"linger_ms": 2, "retries": 3, "request_timeout_ms": 5_000}


@dataclass
class Service:
    """What every request shares (app.state.service)."""

    settings: Settings
    metrics: ApiMetrics
    pool: asyncpg.Pool | None = None
    keys: KeyCache | None = None
    producer: ChargeProducer | None = None
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


def _without_fastapi_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 HTTPValidationError on every route with parameters; this API
    answers bad parameters with 400 and an ErrorBody (documented per route), so a generated
    client must not expect the other shape."""
    fastapi_422 = "#/components/schemas/HTTPValidationError"
    for operations in schema["paths"].values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            if fastapi_422 in json.dumps(answer):
                del operation["responses"]["422"]
    if fastapi_422 not in json.dumps(schema["paths"]):
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
    return schema


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; `uvicorn.run(create_app(settings))` serves it."""
    service = Service(settings, ApiMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # min_size=0: no connection at start, so the service comes up (and says why it is not
        # ready) while Postgres is away; connections open on first use.
        service.pool = await asyncpg.create_pool(settings.dsn, min_size=0, max_size=4, command_timeout=30)
        service.keys = KeyCache(service.pool, settings.api_key_cache.total_seconds())
        service._keep(asyncio.create_task(service.connect_kafka(), name="api-connect-kafka"))
        # Everything imported and built so far lives as long as the process: out of the
        # collector's way, so that a full collection does not stall requests scanning it.
        gc.collect()
        gc.freeze()
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
            app.openapi_schema = _without_fastapi_422(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(ingest.router)
    app.include_router(query.router)

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


def serve(settings: Settings) -> Any:
    """The app behind the guard (bounded concurrency, metrics, access log): what uvicorn runs."""
    app = create_app(settings)
    service: Service = app.state.service
    return Guard(app, service.metrics, settings.api_max_concurrency, settings.api_retry_after.total_seconds())
