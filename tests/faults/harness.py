"""Fault injection: produce charges while killing workers, rebalancing and stopping Postgres.

Everything is real: a Tansu broker and a private Postgres of the harness's own (so it can stop
it), `billing worker` processes killed with SIGKILL. Ground truth is computed from what was
produced, by `tests.support.ground_truth`, which does not use the code under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from streams.embedded_broker import EmbeddedBroker, ensure_topics
from streams.embedded_postgres import EmbeddedPostgres
from streams.migrate import migrate
from streams.producer import ChargeProducer
from streams.synthetic import synthetic_charges
from streams.topic_reader import read_topic
from tests.support import (
    WorkerProcess,
    fetch_rows,
    free_port,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
)


@dataclass(frozen=True)
class Profile:
    events: int
    kills: int
    rebalances: int
    pg_outages: int
    chunks: int
    outage_seconds: float = 10.0
    converge_timeout: float = 240.0


PROFILES = {
    "small": Profile(events=3_000, kills=3, rebalances=1, pg_outages=1, chunks=24),
    "large": Profile(events=100_000, kills=20, rebalances=5, pg_outages=3, chunks=160, converge_timeout=900),
}


@dataclass
class Summary:
    seed: int
    events: int
    kills: int = 0
    rebalances: int = 0
    pg_outages: int = 0
    rows: int = 0
    mismatched: int = 0
    dlq_found: int = 0
    dlq_expected: int = 0
    late_rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatched == 0 and self.dlq_found == self.dlq_expected and not self.problems

    def line(self) -> str:
        return (
            f"faults: seed={self.seed} events={self.events} kills={self.kills} "
            f"rebalances={self.rebalances} pg_outages={self.pg_outages} rows={self.rows} "
            f"mismatched={self.mismatched} dlq={self.dlq_found}/{self.dlq_expected}"
        )


def bad_records(rng: random.Random, account: str, now: datetime, n: int) -> list[tuple[bytes | None, bytes]]:
    """`n` records the worker must refuse, one reason each, all with the account as key."""
    base = {
        "event_id": "x",
        "occurred_at": now.isoformat(),
        "account_id": account,
        "user_id": "u",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    kinds = [
        lambda: b"{truncated",
        lambda: json.dumps({**base, "total_tokens": 5}).encode(),
        lambda: json.dumps({**base, "prompt_tokens": -3}).encode(),
        lambda: json.dumps({**base, "occurred_at": "2026-11-01T10:00:00"}).encode(),
        lambda: json.dumps({**base, "occurred_at": (now + timedelta(days=1)).isoformat()}).encode(),
        lambda: json.dumps({**base, "occurred_at": (now - timedelta(days=60)).isoformat()}).encode(),
        lambda: json.dumps({**base, "account_id": account + "-other"}).encode(),
    ]
    return [(account.encode(), rng.choice(kinds)()) for _ in range(n)]


class Scenario:
    def __init__(self, profile: Profile, seed: int, workdir: Path, log=print) -> None:
        self.profile, self.seed, self.workdir, self.log = profile, seed, workdir, log
        self.rng = random.Random(seed)
        self.summary = Summary(seed=seed, events=0)
        self.workers: list[WorkerProcess] = []
        self.produced: list[dict[str, Any]] = []
        self.bad_coordinates: set[tuple[int, int]] = set()
        self._worker_seq = 0

    async def run(self) -> Summary:
        broker = EmbeddedBroker(self.workdir / "broker", "127.0.0.1", free_port())
        pg = EmbeddedPostgres(self.workdir, port=free_port())
        await broker.start()
        server = await pg.start()
        try:
            database = server.rsplit("/", 1)[0] + "/billing"
            conn = await asyncpg.connect(server)
            await conn.execute("CREATE DATABASE billing")
            await conn.close()
            conn = await asyncpg.connect(database)
            await migrate(conn)
            await conn.close()
            self.env = pipeline_env(
                broker.address,
                database,
                self.workdir / "data",
                grace="1m",
                idle_timeout="10s",
                kafka_session_timeout="6s",
            )
            self.settings = settings_from(self.env)
            await ensure_topics(self.settings)
            self.pg = pg
            self.database = database
            await self._chaos_and_produce()
            await self._converge()
        finally:
            for w in self.workers:
                w.kill()
            await pg.stop(mode="immediate")
            await broker.stop()
        return self.summary

    def _spawn_worker(self) -> WorkerProcess:
        self._worker_seq += 1
        worker = WorkerProcess(self.env, self.workdir / f"worker-{self._worker_seq}.log").start()
        self.workers.append(worker)
        return worker

    def _alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    async def _produce_chunk(self, chunk: list[dict[str, Any]], bad: int) -> None:
        async with ChargeProducer(self.settings, linger_ms=20) as producer:
            for charge in chunk:
                await producer.send(charge)
        self.produced.extend(chunk)
        if bad:
            records = bad_records(self.rng, chunk[0]["account_id"], datetime.now(UTC), bad)
            metadata = await produce_raw(
                self.settings.kafka_bootstrap, self.settings.charges_topic, [(k, v, None) for k, v in records]
            )
            self.bad_coordinates.update((m.partition, m.offset) for m in metadata)

    def _charges(self) -> list[dict[str, Any]]:
        p = self.profile
        charges = [c.to_wire() for c in synthetic_charges(p.events, days=3, accounts=30, seed=self.seed)]
        duplicates = [dict(c) for c in self.rng.sample(charges, k=max(1, p.events // 20))]
        merged = charges + duplicates
        self.rng.shuffle(merged)
        return merged

    async def _chaos_and_produce(self) -> None:
        p = self.profile
        charges = self._charges()
        self.summary.events = len(charges)
        size = -(-len(charges) // p.chunks)
        chunks = [charges[i : i + size] for i in range(0, len(charges), size)]
        actions = ["kill"] * p.kills + ["rebalance"] * p.rebalances + ["pg_outage"] * p.pg_outages
        self.rng.shuffle(actions)
        # Spread the actions over the chunks, leaving the first and the last chunks quiet.
        slots = sorted(
            self.rng.sample(range(1, max(len(chunks) - 1, 2)), k=min(len(actions), len(chunks) - 2))
        )
        plan = dict(zip(slots, actions, strict=False))
        leftovers = actions[len(slots) :]
        self._spawn_worker()
        for index, chunk in enumerate(chunks):
            bad = 1 if self.rng.random() < 0.5 else 0
            await self._produce_chunk(chunk, bad)
            action = plan.get(index)
            if action:
                await self._act(action)
            await asyncio.sleep(self.rng.uniform(0.1, 0.6))
        for action in leftovers:
            await self._act(action)
        if not self._alive():
            self._spawn_worker()

    async def _act(self, action: str) -> None:
        alive = self._alive()
        if action == "kill":
            victim = self.rng.choice(alive) if alive else None
            await asyncio.sleep(self.rng.uniform(0, 1.5))  # a random moment mid-stream
            if victim:
                victim.kill()
                self.summary.kills += 1
                self.log(f"  SIGKILL worker pid {victim.proc.pid if victim.proc else '?'}")
            await asyncio.sleep(self.rng.uniform(0, 2))
            self._spawn_worker()
        elif action == "rebalance":
            newcomer = self._spawn_worker()
            await asyncio.sleep(self.rng.uniform(8, 12))  # both in the group, sharing partitions
            leaver = self.rng.choice([w for w in self._alive() if w is not newcomer] or [newcomer])
            if self.rng.random() < 0.5:
                leaver.kill()
            else:
                leaver.stop()
            self.summary.rebalances += 1
            self.log("  rebalance: a second worker joined, then one left")
            if not self._alive():
                self._spawn_worker()
        elif action == "pg_outage":
            mode = self.rng.choice(["fast", "immediate"])
            await self.pg.stop(mode=mode)
            self.log(f"  postgres stopped ({mode}) for {self.profile.outage_seconds:.0f}s")
            await asyncio.sleep(self.profile.outage_seconds)
            await self.pg.start()
            self.summary.pg_outages += 1

    async def _converge(self) -> None:
        expected = ground_truth(self.produced, ZoneInfo(self.settings.timezone))
        deadline = time.monotonic() + self.profile.converge_timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            if not self._alive():
                self._spawn_worker()
            try:
                actual = await fetch_rows(self.database)
                problems = mismatches(expected, actual)
            except (OSError, asyncpg.PostgresError) as exc:
                problems = [f"postgres: {exc}"]
            if not problems:
                break
            await asyncio.sleep(1.0)
        self.summary.rows = len(expected)
        self.summary.mismatched = len(problems)
        self.summary.problems = problems[:20]
        actual = await fetch_rows(self.database)
        self.summary.late_rows = sum(1 for r in actual.values() if r["late_charge_count"] > 0)
        await self._check_dlq()

    async def _check_dlq(self) -> None:
        found: set[tuple[int, int]] = set()
        expected = self.bad_coordinates
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async for records in read_topic(self.settings, self.settings.dlq_topic, settle=0.5):
                for record in records:
                    letter = json.loads(record.value)
                    found.add((letter["partition"], letter["offset"]))
            if expected <= found:
                break
            await asyncio.sleep(1)
        self.summary.dlq_expected = len(expected)
        self.summary.dlq_found = len(expected & found)
        unexpected = found - expected
        if unexpected:
            self.summary.problems.append(f"{len(unexpected)} DLQ records for charges that were valid")


async def run_scenario(profile: Profile, seed: int, keep: bool = False, log=print) -> Summary:
    workdir = Path(tempfile.mkdtemp(prefix="billing-faults-"))
    workdir.chmod(0o755)
    try:
        return await Scenario(profile, seed, workdir, log).run()
    finally:
        if keep or os.environ.get("BILLING_FAULTS_KEEP"):
            log(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
