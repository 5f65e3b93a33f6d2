"""Measurements 7 and 8: memory, on-disk bytes and throughput as the open keys grow; recovery.

One worker on a topic of its own, warmed up (group joined, a first charge counted), then fed
level after level: new charges on new daily keys (`bench.data.distinct_keys`) until it holds
10k, 100k, 1M distinct keys. Each increment is sent at full speed by `ChargeProducer` while the
worker drains it, and timed from the first send until Postgres counts the last charge, so the
throughput of an increment is a warm worker's, start-up excluded, at a growing number of keys.
Worker RSS is sampled all along; Postgres bytes are those of the rows and of the dedup ledger.

Recovery: that worker, holding every key, is SIGKILLed; a new one starts at once, a new charge is
sent, and the clock runs from the kill until that charge is visible in Postgres (interpreter
start, group join while the dead member times out, first flush).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from bench.data import distinct_keys
from bench.infra import Bench, BenchError, RssSampler, dir_bytes, relation_bytes, wait_for_total
from bench.produce import with_library
from schemas.charge import Charge
from streams.producer.producer import ChargeProducer
from tests.support import WorkerProcess

TOPIC = "bench-keys"
COUNT_ROWS = "SELECT count(*) FROM daily_billing_records"


@dataclass
class Level:
    keys: int
    increment: int
    seconds: float
    rss_peak: int
    rss_end: int
    rows_bytes: int
    seen_bytes: int

    @property
    def rate(self) -> float:
        return self.increment / self.seconds


@dataclass
class Scale:
    rss_idle: int = 0
    levels: list[Level] = field(default_factory=list)
    state_dir_bytes: int = 0
    recovery_seconds: float | None = None


def _probe(user: str, event_id: str) -> Charge:
    return Charge.model_validate(
        {
            "account_id": "scale-000000",
            "user_id": user,
            "provider": "openai",
            "charge_type": "completion",
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event_id": event_id,
        }
    )


async def _send(bench: Bench, charge: Charge) -> None:
    async with ChargeProducer(bench.settings(TOPIC), linger_ms=0) as producer:
        await producer.send(charge)


async def scale(bench: Bench, levels: tuple[int, ...], seed: int, log=print) -> Scale:
    await bench.create_topic(TOPIC)
    database = await bench.new_database("keys")
    env = bench.env(database, TOPIC, "keys")
    worker = bench.start_worker(env, "keys")
    result = Scale()
    assert worker.proc is not None
    await _send(bench, _probe("warm-up", "scale-warm-up"))
    await wait_for_total(database, 1, time.monotonic(), [worker], timeout=120)
    await asyncio.sleep(1)
    with RssSampler([worker.proc.pid]) as rss:
        result.rss_idle = rss.sample()
        counted, held = 1, 0
        for keys in levels:
            log(f"  scale: growing to {keys:,} distinct daily keys")
            charges = distinct_keys(held, keys, seed)
            rss.peak = 0
            started = time.monotonic()
            await with_library(bench.settings(TOPIC), charges, record=False)
            del charges
            counted += keys - held
            progress = await wait_for_total(database, counted, started, [worker], timeout=1800)
            assert progress.done is not None
            rss.sample()
            sizes = await relation_bytes(database, ("daily_billing_records", "billing_dedup"))
            result.levels.append(
                Level(
                    keys,
                    keys - held,
                    progress.done,
                    rss.peak,
                    rss.last,
                    sizes["daily_billing_records"],
                    sizes["billing_dedup"],
                )
            )
            held = keys
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetchval(COUNT_ROWS)
    finally:
        await conn.close()
    if rows != held + 1:
        raise BenchError(f"{held + 1} distinct keys produced, {rows} rows in Postgres")
    result.state_dir_bytes = dir_bytes(bench.workdir / "data-keys")
    result.recovery_seconds = await recovery(bench, worker, env, database, counted)
    return result


async def recovery(
    bench: Bench,
    victim: WorkerProcess,
    env: dict[str, str],
    database: str,
    counted: int,
    timeout: float = 120,
) -> float:
    """SIGKILL `victim`, start a new worker, send a charge: seconds from the kill until it shows."""
    victim.kill()
    killed = time.monotonic()
    worker = bench.start_worker(env, "keys-restarted")
    probe = _probe("recovery-probe", "scale-recovery-probe")
    await _send(bench, probe)
    conn = await asyncpg.connect(database)
    try:
        while True:
            found = await conn.fetchval(
                "SELECT count(*) FROM daily_billing_records WHERE account_id = $1 AND user_id = $2",
                probe.account_id,
                probe.user_id,
            )
            if found:
                seconds = time.monotonic() - killed
                break
            if not worker.alive or time.monotonic() - killed > timeout:
                raise BenchError(f"restarted worker did not count the probe:\n{worker.log_tail()}")
            await asyncio.sleep(0.1)
        total = int(await conn.fetchval("SELECT sum(charge_count) FROM daily_billing_records"))
    finally:
        await conn.close()
    worker.kill()
    if total != counted + 1:
        raise BenchError(f"after recovery {total} charges counted, {counted + 1} produced")
    return seconds
