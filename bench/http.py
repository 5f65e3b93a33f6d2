"""Measurement 11: charges through `billing api` (POST /v1/charges) instead of a Kafka client.

- http_ingest: charges/s in 100-charge JSON batches, 16 requests in flight on keep-alive
  connections, each answered only once Kafka acknowledged it; reported as a ratio of
  `billing produce` sending the same charges from JSON lines in the same run (the command's
  own code, in-process, so that interpreter start-up is not counted), since both start from
  JSON text and the figure asks what the HTTP hop costs.
- http_p99_ms: single-charge requests at 1,000/s, open loop: each request's clock starts at
  its scheduled time, not when the client got round to it, so a slow server shows as latency
  instead of quietly lowering the rate (no coordinated omission).

One `billing api` process, a real key, the bench's broker; no worker is needed to measure the
ingest side, the API answers once Kafka has the charges.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from dataclasses import dataclass

import aiohttp
import asyncpg

from bench.infra import Bench, BenchError
from schemas.charge import Charge
from streams.api.keys import Scope, create_key
from streams.cli.produce import _produce
from streams.config.settings import Settings
from tests.api_support import ApiServer

BATCH, IN_FLIGHT, TICK = 100, 16, 0.01


@dataclass
class HttpResult:
    ingest_rate: float
    ingest_seconds: float
    latencies: list[float]
    offered: float
    errors: int
    server_p99: float  # upper bound of the server's own histogram bucket holding its p99

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def billing_produce(settings: Settings, charges: list[Charge]) -> float:
    """Charges/s of `billing produce FILE` on these charges as JSON lines."""
    lines = b"\n".join(json.dumps(c.to_wire()).encode() for c in charges) + b"\n"
    sent, _, rejected, seconds = await _produce(settings, io.BytesIO(lines), None, True, False)
    if rejected or sent != len(charges):
        raise BenchError(f"billing produce: {rejected} lines rejected, {sent} of {len(charges)} sent")
    return sent / seconds


async def _start(bench: Bench, topic: str) -> tuple[ApiServer, str]:
    database = await bench.new_database("http")
    env = bench.env(database, topic, "http")
    server = ApiServer(env, bench.workdir / "logs" / "api.log")
    server.start()
    bench.workers.append(server)
    await server.wait_ready(120)
    conn = await asyncpg.connect(database)
    try:
        _, key = await create_key(conn, Scope("ingest"), "bench")
    finally:
        await conn.close()
    return server, key


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status


async def _ingest(session: aiohttp.ClientSession, url: str, charges: list[Charge]) -> tuple[float, int]:
    bodies = [
        json.dumps([c.to_wire() for c in charges[i : i + BATCH]]).encode()
        for i in range(0, len(charges), BATCH)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    errors = 0

    async def client() -> None:
        nonlocal errors
        while not queue.empty():
            if await _post(session, url, queue.get_nowait()) != 202:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - started, errors


async def _latency(
    session: aiohttp.ClientSession, url: str, template: Charge, rate: int, seconds: float
) -> tuple[list[float], int]:
    wire = template.to_wire()
    per_tick = max(1, round(rate * TICK))
    bodies = [
        json.dumps({**wire, "event_id": str(uuid.uuid4())}).encode()
        for _ in range(int(seconds / TICK) * per_tick)
    ]
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal errors
        if await _post(session, url, body) == 202:
            latencies.append(loop.time() - scheduled)
        else:
            errors += 1

    tasks = []
    start = loop.time() + 0.1
    for n in range(0, len(bodies), per_tick):
        scheduled = start + (n // per_tick) * TICK
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        tasks += [asyncio.create_task(one(b, scheduled)) for b in bodies[n : n + per_tick]]
    _, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    return latencies, errors + len(pending)


async def _server_buckets(session: aiohttp.ClientSession, base: str) -> dict[float, float]:
    """Cumulative counts of the server's latency histogram for /v1/charges, by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("route") == "/v1/charges":
                out[float(sample.labels["le"])] = sample.value
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The smallest bucket bound under which a fraction `q` of the requests in between fell."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    return next((b for b, c in zip(bounds, counts, strict=True) if total and c >= q * total), float("nan"))


async def http_front_door(
    bench: Bench, topic: str, charges: list[Charge], rate: int, seconds: float
) -> HttpResult:
    """Both measurements on one `billing api` process (warmed up first)."""
    server, key = await _start(bench, topic)
    url = f"{server.url}/v1/charges"
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            await _ingest(session, url, charges[:1000])  # warm-up: connections, metadata, caches
            took, errors = await _ingest(session, url, charges)
            before = await _server_buckets(session, server.url)
            latencies, late_errors = await _latency(session, url, charges[0], rate, seconds)
            server_p99 = _bucket_quantile(before, await _server_buckets(session, server.url), 0.99)
    finally:
        server.stop()
    if errors or not latencies:
        raise BenchError(f"http: {errors} ingest requests not answered 202; see {server.log_path}")
    return HttpResult(len(charges) / took, took, latencies, rate, late_errors, server_p99)
