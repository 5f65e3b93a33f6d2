"""The bench's own world: a Tansu broker, a private Postgres server, databases, topics, workers.

Like the fault harness (`tests/faults/harness.py`), everything is real and private to the run:
a broker on a free port, a Postgres server of ours under the run's temp dir (fsync on, the
embedded default's configuration), one fresh migrated database per measurement, and
`billing worker` child processes (`tests.support.WorkerProcess`) with the shipped defaults
except the log level (WARNING: the root logger must not be left at DEBUG: it costs ~20%).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from streams.embedded.broker import EmbeddedBroker
from streams.embedded.postgres import EmbeddedPostgres
from streams.kafka.topics import ensure_topics
from tests.support import WorkerProcess, create_database, free_port, pipeline_env, settings_from

PARTITIONS = 8
TOTAL_SQL = "SELECT coalesce(sum(charge_count), 0)::bigint FROM daily_billing_records"


class BenchError(RuntimeError):
    """A measurement could not complete (a worker died, a deadline passed, totals were wrong)."""


class Bench:
    """Owns the broker, the Postgres server and every worker it started; `stop()` ends them all."""

    def __init__(self, workdir: Path, log: Callable[[str], None] = print) -> None:
        self.workdir, self.log = workdir, log
        self.broker = EmbeddedBroker(workdir / "broker", "127.0.0.1", free_port())
        self.pg = EmbeddedPostgres(workdir, port=free_port())
        self.server_url = ""
        self.workers: list[WorkerProcess] = []
        self._databases = 0

    @property
    def bootstrap(self) -> str:
        return self.broker.address

    async def start(self) -> None:
        await self.broker.start()
        self.server_url = await self.pg.start()

    async def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        with contextlib.suppress(Exception):
            await self.pg.stop(mode="immediate")
        with contextlib.suppress(Exception):
            await self.broker.stop()

    async def new_database(self, label: str) -> str:
        """A fresh database with the project's schema; its URL."""
        self._databases += 1
        return await create_database(self.server_url, f"bench_{self._databases}_{label}")

    def env(self, database: str, topic: str, label: str, **overrides: str) -> dict[str, str]:
        """A worker environment reading `topic` with its own group, DLQ topic and data dir."""
        settings = {"charges_topic": topic, "log_level": "WARNING", "flush_interval": "2s"}
        settings.update(overrides)
        env = pipeline_env(self.bootstrap, database, self.workdir / f"data-{label}", **settings)
        env["BILLING_APP_ID"] = f"bench-{label}"
        env["BILLING_DLQ_TOPIC"] = f"{topic}.dlq-{label}"
        return env

    async def create_topic(self, name: str) -> None:
        """`name` with BILLING_PARTITIONS partitions (and its DLQ twin), before anyone produces."""
        env = pipeline_env(self.bootstrap, "postgresql://unused/x", self.workdir, charges_topic=name)
        env["BILLING_DLQ_TOPIC"] = f"{name}.dlq"
        await ensure_topics(settings_from(env))

    def settings(self, topic: str) -> Any:
        env = pipeline_env(self.bootstrap, "postgresql://unused/x", self.workdir, charges_topic=topic)
        return settings_from(env)

    def start_worker(
        self, env: dict[str, str], label: str, extra: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(env, self.workdir / "logs" / f"{label}.log", extra).start()
        self.workers.append(worker)
        return worker


@dataclass
class Progress:
    """When the first charge and the last of `target` became visible (seconds after `started`)."""

    target: int
    started: float
    first: float | None = None
    done: float | None = None
    count_at_first: int = 0

    @property
    def rate(self) -> float:
        """Charges/s from the worker's start (process start, group join and all)."""
        return self.target / self.done if self.done else 0.0

    @property
    def steady_rate(self) -> float:
        """Charges/s from the first visible flush to the last: the start-up cost left out."""
        if self.done is None or self.first is None or self.done <= self.first:
            return self.rate
        return (self.target - self.count_at_first) / (self.done - self.first)


async def wait_for_total(
    database: str,
    target: int,
    started: float,
    workers: list[WorkerProcess],
    timeout: float,
    sql: str = TOTAL_SQL,
    interval: float = 0.2,
) -> Progress:
    """Poll Postgres until `sql` (a sum of charge counts) reaches `target`."""
    progress = Progress(target, started)
    conn = await asyncpg.connect(database)
    try:
        while True:
            count = int(await conn.fetchval(sql))
            now = time.monotonic() - started
            if count and progress.first is None:
                progress.first, progress.count_at_first = now, count
            if count >= target:
                progress.done = now
                if count > target:
                    raise BenchError(f"{count} charges counted, {target} produced: something double counted")
                return progress
            dead = [w for w in workers if not w.alive]
            if dead:
                raise BenchError(f"worker exited (code {dead[0].proc.returncode}):\n{dead[0].log_tail()}")
            if now > timeout:
                raise BenchError(f"only {count} of {target} charges after {timeout:.0f}s")
            await asyncio.sleep(interval)
    finally:
        await conn.close()


@dataclass
class RssSampler:
    """Peak and last resident set size of some processes, sampled every `interval` seconds."""

    pids: list[int]
    interval: float = 0.25
    peak: int = 0
    last: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def sample(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        self.last = total
        self.peak = max(self.peak, total)
        return total

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


class CpuMeter:
    """CPU seconds the workers and the Postgres server (all its processes) spend meanwhile."""

    def __init__(self, workers: list[int], postmaster: Path) -> None:
        self.workers = workers
        try:
            self.pg_root = int(postmaster.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            self.pg_root = 0
        self.worker_cpu = self.pg_cpu = 0.0
        self.wall = time.monotonic()
        self._pg = self._postgres()

    def _postgres(self) -> dict[int, float]:
        if not self.pg_root:
            return {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pg_root)
            return {p.pid: _cpu([p.pid]) for p in [root, *root.children()]}
        return {}

    def stop(self) -> CpuMeter:
        self.wall = time.monotonic() - self.wall
        self.worker_cpu = _cpu(self.workers)  # the workers started with the meter
        now = self._postgres()
        self.pg_cpu = sum(v - self._pg.get(pid, 0.0) for pid, v in now.items())
        return self

    def describe(self) -> str:
        if not self.wall:
            return ""
        return f"CPU: workers {self.worker_cpu / self.wall:.0%}, Postgres {self.pg_cpu / self.wall:.0%} of a core"

    def per_core(self, charges: int) -> str:
        """Charges per CPU-second of each side: what one core of it sustains when it is the
        bottleneck (start-up included for the workers: interpreter and group join cost ~1 s)."""
        if not self.worker_cpu or not self.pg_cpu:
            return ""
        return (
            f"{charges / self.worker_cpu:,.0f} charges per worker CPU-second, "
            f"{charges / self.pg_cpu:,.0f} per Postgres CPU-second"
        )


async def relation_bytes(database: str, tables: tuple[str, ...]) -> dict[str, int]:
    """pg_total_relation_size (heap, indexes, TOAST) per table."""
    conn = await asyncpg.connect(database)
    try:
        return {t: int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t)) for t in tables}
    finally:
        await conn.close()


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
