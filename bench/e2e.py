"""Measurement 1: pre-produced charges, then `billing worker`(s) started; until Postgres has them all.

The clock starts when the worker processes are spawned (interpreter start, topic check, group
join and all) and stops when `sum(charge_count)` reaches N; then, off the clock, every row is
compared with the ground truth (`tests.support.mismatches`), so a fast wrong answer fails the
bench instead of being reported. The figure also comes as a steady rate, from the first visible
flush on, which leaves the start-up (mostly the group join) out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.infra import Bench, BenchError, CpuMeter, Progress, RssSampler, wait_for_total
from tests.support import WorkerProcess, fetch_rows, free_port, mismatches


@dataclass
class Drained:
    label: str
    database: str
    env: dict[str, str]
    workers: list[WorkerProcess]
    progress: Progress
    rss_peak: int
    rss_end: int
    cpu: CpuMeter
    rows: int = 0

    @property
    def rate(self) -> float:
        return self.progress.rate

    @property
    def steady_rate(self) -> float:
        return self.progress.steady_rate


async def drain(
    bench: Bench,
    topic: str,
    n: int,
    label: str,
    workers: int = 1,
    timeout: float = 900,
    database: str | None = None,
) -> Drained:
    """Start `workers` workers on `topic` in a fresh database; return once all `n` are counted.

    The workers are left running (the caller kills them, or SIGKILLs one to time a recovery).
    """
    database = database or await bench.new_database(label)
    env = bench.env(database, topic, label)
    started = time.monotonic()
    # each worker its own web port (Faust binds one even when nobody reads it)
    procs = [
        bench.start_worker(env, f"{label}-{i}", {"BILLING_WEB_PORT": str(free_port())})
        for i in range(workers)
    ]
    pids = [p.proc.pid for p in procs if p.proc]
    cpu = CpuMeter(pids, bench.pg.pgdata / "postmaster.pid")
    with RssSampler(pids) as rss:
        progress = await wait_for_total(database, n, started, procs, timeout)
        rss.sample()
        cpu.stop()
    return Drained(label, database, env, procs, progress, rss.peak, rss.last, cpu)


async def verify(drained: Drained, expected: dict[tuple, dict[str, int]]) -> None:
    """Every row equals the ground truth (raises BenchError listing the first differences)."""
    actual = await fetch_rows(drained.database)
    drained.rows = len(actual)
    problems = mismatches(expected, actual)
    if problems:
        raise BenchError(f"{drained.label}: {len(problems)} rows differ: " + "; ".join(problems[:5]))


async def e2e(
    bench: Bench,
    topic: str,
    n: int,
    expected: dict[tuple, dict[str, int]],
    label: str,
    workers: int = 1,
    timeout: float = 900,
) -> Drained:
    """Drain, stop the workers (SIGKILL: their work is committed), check the rows."""
    drained = await drain(bench, topic, n, label, workers, timeout)
    for worker in drained.workers:
        worker.kill()
    await verify(drained, expected)
    return drained
