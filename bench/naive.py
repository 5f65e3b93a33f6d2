"""Measurement 3: the textbook Faust app (`bench.naive_app`) on the same topic, same data.

It runs as its own worker process. Reading all N charges would take it many minutes, so it is
timed over a window once it runs: the rate is (charges counted at the end of the window minus
at its start) / window, i.e. its steady state with the start-up left out (in its favour).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from bench.infra import Bench, BenchError
from tests.support import WorkerProcess

TABLE = "naive_daily"


@dataclass
class NaiveResult:
    window: float
    counted: int
    first_after: float

    @property
    def rate(self) -> float:
        return self.counted / self.window if self.window else 0.0


async def naive_faust(bench: Bench, topic: str, window: float, warmup: float = 3.0) -> NaiveResult:
    """Start the naive app, wait until it counts, let it warm up, then count over `window` s."""
    from bench.naive_app import DDL

    database = await bench.new_database("naive")
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(DDL.format(table=TABLE))
        env = bench.env(database, topic, "naive")
        env["NAIVE_TABLE"] = TABLE
        worker = WorkerProcess(
            env, bench.workdir / "logs" / "naive.log", command=("bench.naive_app",)
        ).start()
        bench.workers.append(worker)
        total = f"SELECT coalesce(sum(charge_count), 0)::bigint FROM {TABLE}"  # noqa: S608
        started = time.monotonic()
        while not await conn.fetchval(total):
            if not worker.alive or time.monotonic() - started > 60:
                raise BenchError(f"the naive Faust app did not start counting:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)
        first_after = time.monotonic() - started
        await asyncio.sleep(warmup)
        begin, t0 = await conn.fetchval(total), time.monotonic()
        await asyncio.sleep(window)
        end, t1 = await conn.fetchval(total), time.monotonic()
        worker.kill()
    finally:
        await conn.close()
    return NaiveResult(t1 - t0, int(end - begin), first_after)
