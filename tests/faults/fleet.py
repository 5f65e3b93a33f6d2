"""The harness's workers, and faults whose landing the workers' own logs prove.

A kill counts in a phase only when the victim's log shows it there: the crash point's own line
(after a take's dead letters are durable and before its flush, inside the flush transaction,
between the Postgres commit and the Kafka acknowledgement), a
rejoin of the group with no assignment completed after it (during a rebalance), a retry on a
Postgres that is down (while Postgres is down). A rebalance counts only when the logs show the
partitions shared between two workers and then all of them back on one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from tests.faults.summary import PHASES
from tests.support import WorkerProcess, free_port

ASSIGNED = re.compile(r"assignment complete: (\d+) partitions")
REJOINING = "(Re-)joining group"
PG_RETRY = "postgres unavailable or not answering"
CRASH_POINTS = {
    "after_dlq": "after_dlq_before_flush",
    "in_flush": "inside_flush_transaction",
    "after_commit": "after_flush_before_ack",
}


class FaultNotShown(AssertionError):
    """A fault did not land where it was aimed, or the logs do not show that it did."""


class Worker(WorkerProcess):
    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def assignments(self) -> list[int]:
        return [int(n) for n in ASSIGNED.findall(self.text())]

    def rejoins(self) -> int:
        return self.text().count(REJOINING)

    def in_rebalance(self) -> bool:
        """The last thing the log says about the group is a rejoin, not a completed assignment."""
        text = self.text()
        last = max((m.start() for m in ASSIGNED.finditer(text)), default=-1)
        return text.rfind(REJOINING) > last


async def until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    between: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Poll `check` until it holds; `between` (e.g. produce a few charges) runs between polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await (between() if between else asyncio.sleep(interval))
    raise FaultNotShown(f"not shown within {timeout:.0f}s: {what}")


class Fleet:
    def __init__(self, env: Mapping[str, str], workdir: Path, partitions: int, log=print) -> None:
        self.env, self.workdir, self.partitions, self.log = dict(env), workdir, partitions, log
        self.workers: list[Worker] = []
        self.kills: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.rebalances = 0

    def spawn(self, **extra: str) -> Worker:
        # Each worker its own web port: two on one port and the second dies at start.
        extra_env = {
            "BILLING_WEB_PORT": str(free_port()),
            **{f"BILLING_{k.upper()}": v for k, v in extra.items()},
        }
        path = self.workdir / f"worker-{len(self.workers) + 1}.log"
        worker = Worker(self.env, path, extra_env=extra_env)
        worker.start()
        self.workers.append(worker)
        return worker

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    async def ensure_one(self) -> Worker:
        alive = self.alive()
        return alive[0] if alive else await self.spawn_owning(self.partitions)

    async def spawn_owning(self, at_least: int = 1, **extra: str) -> Worker:
        """A new worker, once its log shows it owns partitions."""
        worker = self.spawn(**extra)
        await until(
            lambda: any(n >= at_least for n in worker.assignments()) or not worker.alive,
            120,
            f"{worker.log_path.name} assigned {at_least}+ partitions",
        )
        if not worker.alive:
            raise FaultNotShown(f"{worker.log_path.name} died at start:\n{worker.log_tail()}")
        return worker

    async def kill_at_crash_point(
        self, phase: str, passage: int, feed: Callable[[], Awaitable[object]]
    ) -> None:
        """A worker armed to SIGKILL itself at the phase's crash point joins; its log must show
        the point reached. The workers already there keep running and take its partitions.
        `feed` produces a few charges: without records to flush no flush reaches the point."""
        point = CRASH_POINTS[phase]
        worker = self.spawn(crash_point=f"{point}:{passage}")
        await until(lambda: not worker.alive, 180, f"{worker.log_path.name} reaching {point}", between=feed)
        if f"crash point {point} reached" not in worker.text():
            raise FaultNotShown(f"{worker.log_path.name} died, but not at {point}:\n{worker.log_tail()}")
        self.kills[phase] += 1
        self.log(f"  killed at {point} (passage {passage}): {worker.log_path.name}")
        await self.ensure_one()

    async def kill_in_rebalance(self) -> None:
        """A newcomer makes the group rebalance; an old worker is killed once its log shows it
        rejoining and before it logs the assignment complete."""
        victim = await self.ensure_one()
        if not victim.assignments():
            await until(lambda: bool(victim.assignments()), 120, f"{victim.log_path.name} assigned")
        before = victim.rejoins()
        newcomer = self.spawn()
        await until(lambda: victim.rejoins() > before, 60, f"{victim.log_path.name} rejoining the group")
        victim.kill()
        if not victim.in_rebalance():
            raise FaultNotShown(f"{victim.log_path.name} completed its assignment before the kill")
        self.kills["in_rebalance"] += 1
        self.log(f"  killed {victim.log_path.name} while rejoining the group")
        await until(
            lambda: newcomer.assignments()[-1:] == [self.partitions] or not newcomer.alive,
            120,
            f"{newcomer.log_path.name} taking every partition",
        )

    async def kill_while_pg_down(self, since: Mapping[Worker, int]) -> None:
        """While Postgres is down: SIGKILL a worker whose log shows it retrying on it since."""

        def retrying() -> Worker | None:
            return next((w for w in self.alive() if w.text().count(PG_RETRY) > since.get(w, 0)), None)

        await until(lambda: retrying() is not None, 60, "a worker retrying on the stopped Postgres")
        victim = retrying()
        assert victim is not None
        victim.kill()
        self.kills["pg_down"] += 1
        self.log(f"  killed {victim.log_path.name} while it retried on the stopped Postgres")
        self.spawn()  # it waits for Postgres too

    def retry_counts(self) -> dict[Worker, int]:
        return {w: w.text().count(PG_RETRY) for w in self.alive()}

    async def rebalance(self) -> None:
        """A second worker joins; both logs must show the partitions shared; then the old one
        leaves and the newcomer's log must show it owning all of them."""
        old = await self.ensure_one()
        newcomer = self.spawn()

        def shared() -> bool:
            mine, theirs = newcomer.assignments(), old.assignments()
            return (
                bool(mine and theirs)
                and 0 < mine[-1] < self.partitions
                and mine[-1] + theirs[-1] == self.partitions
            )

        await until(shared, 120, "the partitions shared by two workers")
        await asyncio.to_thread(old.stop)  # a clean leave: the kills are counted in their phases above
        await until(
            lambda: newcomer.assignments()[-1:] == [self.partitions] or not newcomer.alive,
            120,
            f"{newcomer.log_path.name} owning every partition after the other left",
        )
        self.rebalances += 1
        self.log(f"  rebalance shown: {old.log_path.name} and {newcomer.log_path.name} shared, then one left")

    async def stop_all(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.alive()))

    def kill_all(self) -> None:
        for w in self.workers:
            w.kill()

    def log_sizes(self) -> dict[str, int]:
        return {w.log_path.name: len(w.text()) for w in self.alive()}
