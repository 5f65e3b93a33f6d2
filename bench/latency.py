"""Measurement 6: produce-to-visible latency under a steady 2,000 charges/s.

One worker runs on a fresh topic with the shipped BILLING_FLUSH_INTERVAL. A `ChargeProducer`
(default 50 ms linger, as an application would use it) sends today's charges at the target rate
in 10 ms ticks; every 100 ms one of them is a probe whose user_id is unique. The clock of a probe
starts just before `send()` and stops when a poller (every 50 ms) finds its provisional row in
Postgres, so the figure is what a dashboard reading `daily_billing_records` would see.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench.infra import Bench
from schemas.charge import Charge
from streams.producer.producer import ChargeProducer

PROBE_ACCOUNTS = [f"probe-{i}" for i in range(8)]
POLL = """SELECT user_id FROM daily_billing_records
WHERE account_id = ANY($1::text[]) AND user_id = ANY($2::text[])"""


@dataclass
class LatencyResult:
    rate: float
    seconds: float
    latencies: list[float]
    lost: int

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _probe(template: Charge, n: int) -> Charge:
    return template.model_copy(
        update={
            "account_id": PROBE_ACCOUNTS[n % len(PROBE_ACCOUNTS)],
            "user_id": f"probe-user-{n}",
            "event_id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC),
        }
    )


async def _poll(
    database: str, pending: dict[str, float], seen: dict[str, float], stop: asyncio.Event
) -> None:
    conn = await asyncpg.connect(database)
    try:
        while not stop.is_set() or pending:
            if pending:
                rows = await conn.fetch(POLL, PROBE_ACCOUNTS, list(pending))
                now = time.monotonic()
                for row in rows:
                    sent = pending.pop(row["user_id"], None)
                    if sent is not None:
                        seen[row["user_id"]] = now - sent
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def latency(
    bench: Bench, templates: list[Charge], seconds: float, rate: int = 2_000, timeout: float = 20
) -> LatencyResult:
    topic = "bench-latency"
    await bench.create_topic(topic)
    database = await bench.new_database("latency")
    env = bench.env(database, topic, "latency")
    worker = bench.start_worker(env, "latency")
    settings = bench.settings(topic)
    pending: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll(database, pending, seen, stop))
    per_tick, tick = rate // 100, 0.01
    async with ChargeProducer(settings) as producer:
        # Warm up: the worker has joined its group once a probe comes through.
        pending["probe-user--1"] = time.monotonic()
        await producer.send(_probe(templates[0], -1))
        deadline = time.monotonic() + 60
        while "probe-user--1" not in seen:
            if time.monotonic() > deadline or not worker.alive:
                raise RuntimeError(f"latency worker never caught up:\n{worker.log_tail()}")
            await asyncio.sleep(0.05)
        seen.clear()
        sent, probes, i = 0, 0, 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + per_tick
            while sent < due:
                if sent % (rate // 10) == 0:
                    probe = _probe(templates[i % len(templates)], probes)
                    pending[probe.user_id] = time.monotonic()
                    await producer.send(probe)
                    probes += 1
                else:
                    template = templates[i % len(templates)]
                    await producer.send(
                        template.model_copy(
                            update={"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC)}
                        )
                    )
                sent += 1
                i += 1
            await asyncio.sleep(tick)
        achieved = sent / (time.monotonic() - started)
    stop.set()
    try:
        await asyncio.wait_for(poller, timeout)
    except TimeoutError:
        pass
    worker.kill()
    return LatencyResult(achieved, seconds, list(seen.values()), len(pending))
