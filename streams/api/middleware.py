"""Bounded concurrency, metrics and the access log, as plain ASGI around the app.

Plain ASGI rather than Starlette's `@app.middleware("http")`: that one wraps every response in
a stream of its own and costs a large share of a small request's time, and the single-charge
ingest path is exactly the small request that must stay fast.

Over BILLING_API_MAX_CONCURRENCY requests in flight, a new one is answered 503 with
Retry-After at once instead of queued: a queue in front of Kafka only turns overload into
timeouts that a client cannot tell from a lost request. /health, /ready and /metrics are never
refused, so an orchestrator does not kill a process for being busy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from streams.api.metrics import ApiMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access = logging.getLogger("streams.api.access")
PUBLIC = frozenset({"/health", "/ready", "/metrics"})


class Guard:
    """Counts, times and logs each HTTP request; refuses those beyond the concurrency limit."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, limit: int, retry_after_s: float) -> None:
        self.app, self.metrics, self.limit = app, metrics, limit
        self.in_flight = 0
        self._refusal = json.dumps(
            {"error": "overloaded", "message": "too many requests at once; retry shortly"}
        ).encode()
        self._retry_after = str(max(1, round(retry_after_s))).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.in_flight >= self.limit and scope["path"] not in PUBLIC:
            status = 503
            await self._refuse(send)
        else:
            self.in_flight += 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send_status)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
        self._record(scope, status, time.perf_counter() - started)

    async def _refuse(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", self._retry_after),
            (b"content-length", str(len(self._refusal)).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self._refusal})

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        if access.isEnabledFor(logging.INFO):
            key_id = (scope.get("state") or {}).get("key_id")
            access.info(
                "%s %s %d %.1fms",
                scope["method"],
                route,
                status,
                elapsed * 1000,
                extra={"route": route, "status": status, "key_id": key_id},
            )
