"""Fault injection: produce charges of every kind while killing workers at chosen phases,
rebalancing, stopping Postgres and stopping every worker across a day's close.

Everything is real: a Tansu broker and a private Postgres of the harness's own (so it can stop
it), `billing worker` processes. Each fault is verified by the workers' logs (`fleet.py`);
ground truth is computed from what was produced and where it landed (`truth.py`), and checked
twice: once the rows first match, and again after the group has caught up and stayed idle.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from streams.embedded.broker import EmbeddedBroker
from streams.embedded.postgres import EmbeddedPostgres
from streams.kafka.topics import ensure_topics
from streams.sink.migrate import migrate
from streams.testing.synthetic import synthetic_charges
from tests.faults import truth
from tests.faults.catchup import caught_up
from tests.faults.dead_letters import DeadLetters
from tests.faults.fleet import Fleet
from tests.faults.producers import KINDS, Producers
from tests.faults.summary import PHASES, Profile, Summary
from tests.support import free_port, pipeline_env, settings_from


def midnight(moment: datetime, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    return datetime(local.year, local.month, local.day, tzinfo=zone)


class Scenario:
    def __init__(self, profile: Profile, seed: int, workdir: Path, log=print) -> None:
        self.profile, self.seed, self.workdir, self.log = profile, seed, workdir, log
        self.rng = random.Random(seed)
        self.summary = Summary(seed=seed)
        self.zone = ZoneInfo("UTC")
        self.resent: set[tuple[str, str]] = set()
        self.close_seen_seq = 0  # charges produced before the harness saw yesterday closed

    async def run(self) -> Summary:
        broker = EmbeddedBroker(self.workdir / "broker", "127.0.0.1", free_port())
        self.pg = EmbeddedPostgres(self.workdir, port=free_port())
        await broker.start()
        server = await self.pg.start()
        self.fleet: Fleet | None = None
        try:
            self.database = server.rsplit("/", 1)[0] + "/billing"
            conn = await asyncpg.connect(server)
            await conn.execute("CREATE DATABASE billing")
            await conn.close()
            conn = await asyncpg.connect(self.database)
            await migrate(conn)
            await conn.close()
            # Yesterday stays open until the downtime (its end + grace lies 6 h ahead); the days
            # before it close at once, so their charges produced from then on are late.
            self.start = datetime.now(UTC)
            self.today = midnight(self.start, self.zone)
            grace = (self.start - self.today).total_seconds() + 6 * 3600
            env = pipeline_env(
                broker.address,
                self.database,
                self.workdir / "data",
                grace=f"{grace:.0f}s",
                kafka_session_timeout="6s",
            )
            self.settings = settings_from(env)
            self.topic = self.settings.charges_topic
            await ensure_topics(self.settings)
            self.fleet = Fleet(env, self.workdir, self.settings.partitions, self.log)
            self.producers = Producers(self.settings, self.rng)
            self.letters = DeadLetters(self.settings, self.rng)
            await self._produce_with_faults()
            await self._converge()
        finally:
            if self.fleet:
                self.fleet.kill_all()
            await self.pg.stop(mode="immediate")
            await broker.stop()
        return self.summary

    def _charges(self) -> list[dict[str, Any]]:
        p = self.profile
        charges = [c.to_wire() for c in synthetic_charges(p.events, days=3, accounts=30, seed=self.seed)]
        spare = synthetic_charges(10 * p.events, days=3, accounts=30, seed=self.seed + 2)
        self.reserve = (c.to_wire() for c in spare)  # for `_trickle`
        # Two accounts may use the same event_id: both count.
        keys = {(c["account_id"], c["event_id"]) for c in charges}
        for c in self.rng.sample(charges, k=max(2, p.events // 100)):
            other = self.rng.choice(charges)
            if (c["account_id"], other["event_id"]) not in keys:  # one copy per key in the stream
                keys.add((c["account_id"], other["event_id"]))
                c["event_id"] = other["event_id"]
                self.summary.shared_event_ids += 1
        return charges

    async def _produce_with_faults(self) -> None:
        p = self.profile
        charges = self._charges()
        size = -(-len(charges) // p.chunks)
        chunks = [charges[i : i + size] for i in range(0, len(charges), size)]
        actions = [phase for phase in PHASES for _ in range(p.kills[phase]) if phase != "pg_down"]
        actions += ["rebalance"] * p.rebalances + ["pg_outage"] * p.pg_outages
        self.rng.shuffle(actions)
        slots = sorted(self.rng.sample(range(1, len(chunks) - 1), k=min(len(actions), len(chunks) - 2)))
        plan: dict[int, list[str]] = {s: [a] for s, a in zip(slots, actions, strict=False)}
        plan.setdefault(len(chunks) - 2, []).extend(actions[len(slots) :])
        downtime_at = len(chunks) // 2
        pg_kills = p.kills["pg_down"]
        await self.fleet.spawn_owning(self.settings.partitions)
        for index, chunk in enumerate(chunks):
            if index == downtime_at:
                await self._downtime_across_close(len(chunk))
            self.log(f"  chunk {index + 1}/{len(chunks)}: {len(chunk)} charges, {KINDS[index % len(KINDS)]}")
            await self.producers.send(KINDS[index % len(KINDS)], chunk)
            await self.letters.produce(chunk[0]["account_id"], self.producers)
            await self._resend(max(1, len(chunk) // 15))
            for action in plan.get(index, []):
                if action == "pg_outage":
                    await self._pg_outage(kill=pg_kills > 0)
                    pg_kills -= 1
                else:
                    await self._act(action)
        while pg_kills > 0:  # more pg_down kills than outages planned
            await self._pg_outage(kill=True)
            pg_kills -= 1
        await self.fleet.ensure_one()

    async def _act(self, action: str) -> None:
        if action in ("in_flush", "after_commit"):
            await self.fleet.kill_at_crash_point(action, self.rng.randint(1, 3), self._trickle)
        elif action == "in_rebalance":
            await self.fleet.kill_in_rebalance()
        elif action == "rebalance":
            await self.fleet.rebalance()

    async def _trickle(self) -> None:
        """A few fresh charges, then a pause: keeps the workers flushing while a fault waits."""
        await self.producers.send(self.rng.choice(KINDS), [next(self.reserve) for _ in range(8)])
        await asyncio.sleep(0.5)

    async def _pg_outage(self, kill: bool) -> None:
        since = self.fleet.retry_counts()
        mode = self.rng.choice(["fast", "immediate"])
        await self.pg.stop(mode=mode)
        self.log(f"  postgres stopped ({mode})")
        started = time.monotonic()
        try:
            if kill:
                await self.fleet.kill_while_pg_down(since)
            await asyncio.sleep(max(0.0, self.profile.outage_seconds - (time.monotonic() - started)))
        finally:
            await self.pg.start()
        self.summary.pg_outages += 1

    async def _resend(self, n: int) -> None:
        """Re-send earlier charges, half of them with another occurred_at, each only once its
        original is at or below its partition's fence: the original committed first, so it is
        the copy that counts."""
        try:
            conn = await asyncpg.connect(self.database, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT partition, applied_offset FROM billing_partitions WHERE topic = $1", self.topic
                )
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return  # Postgres is away: no re-send this time
        fences = {r[0]: r[1] for r in rows}
        fenced = [
            s
            for s in self.producers.sent
            if not s.resend
            and s.offset <= fences.get(s.partition, -1)
            and (s.charge["account_id"], s.charge["event_id"]) not in self.resent
        ]
        copies = []
        for s in self.rng.sample(fenced, k=min(n, len(fenced))):
            copy = dict(s.charge)
            if self.rng.random() < 0.5:
                when = datetime.fromisoformat(copy["occurred_at"]) - timedelta(hours=self.rng.uniform(1, 30))
                copy["occurred_at"] = when.isoformat()
                self.summary.moved_resends += 1
            self.resent.add((copy["account_id"], copy["event_id"]))
            copies.append(copy)
        await self.producers.send(self.rng.choice(KINDS), copies, resend=True)

    async def _downtime_across_close(self, n: int) -> None:
        """Every worker stopped while charges of yesterday are produced; yesterday's end + grace
        passes meanwhile. None of those charges may be late: the close must wait for them."""
        await self.fleet.stop_all()
        stopped = datetime.now(UTC)
        grace = (stopped - self.today).total_seconds() + 3  # yesterday's end + grace: in 3 s
        yesterday = self.today - timedelta(days=1)
        charges = [
            {
                **c.to_wire(),
                "occurred_at": (yesterday + timedelta(seconds=self.rng.uniform(0, 86_399))).isoformat(),
            }
            for c in synthetic_charges(n, days=1, accounts=30, seed=self.seed + 1)
        ]
        for i, kind in enumerate(KINDS):
            await self.producers.send(kind, charges[i :: len(KINDS)])
        due = self.today + timedelta(seconds=grace + 1)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        conn = await asyncpg.connect(self.database)
        try:
            assert await conn.fetchval("SELECT now()") > due - timedelta(seconds=1)
        finally:
            await conn.close()
        self.fleet.env["BILLING_GRACE"] = f"{grace:.3f}s"
        self.log(
            f"  downtime: all workers stopped, {n} charges of {yesterday.date()} produced, its close passed"
        )
        await self.fleet.spawn_owning(self.settings.partitions)
        await self._wait_closed(yesterday.date())
        self.close_seen_seq = len(self.producers.sent)
        self.yesterday = yesterday.date()

    async def _wait_closed(self, day) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            conn = await asyncpg.connect(self.database)
            try:
                closed = await conn.fetchval("SELECT closed_through FROM billing_calendar")
            finally:
                await conn.close()
            if closed is not None and closed >= day:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{day} never closed after the downtime")

    async def _check(self) -> tuple[truth.Truth, truth.Snapshot, truth.Verdict]:
        snap = await truth.snapshot(self.database, self.topic)
        horizon = max(1, int(self.settings.late_horizon.total_seconds() // 86400))
        expected = truth.expected(self.producers.sent, snap.marks, self.zone, horizon)
        return expected, snap, truth.compare(expected, snap)

    async def _converge(self) -> None:
        s = self.summary
        deadline = time.monotonic() + self.profile.converge_timeout
        verdict = truth.Verdict(["not checked"])
        while time.monotonic() < deadline:
            await self.fleet.ensure_one()
            try:
                expected, snap, verdict = await self._check()
            except (OSError, asyncpg.PostgresError) as exc:
                verdict = truth.Verdict([f"postgres: {exc}"])
            if verdict.exact:
                break
            await asyncio.sleep(1.0)
        if not verdict.exact:
            s.problems.append("rows never matched ground truth before the deadline")
        ends = await caught_up(
            self.settings.kafka_bootstrap,
            self.settings.app_id,
            self.database,
            self.topic,
            self.settings.partitions,
            self.fleet.log_sizes,
            self.profile.idle_seconds,
            timeout=max(60.0, deadline - time.monotonic()),
            on_wait=self.fleet.ensure_one,
        )
        expected, snap, verdict = await self._check()  # again: a late double count shows here
        s.problems += truth.state_problems(snap, ends, self.yesterday)
        s.events, s.kills, s.rebalances = len(self.producers.sent), self.fleet.kills, self.fleet.rebalances
        s.producers = dict(self.producers.used)
        s.resends = sum(1 for x in self.producers.sent if x.resend)
        s.rows = len(expected.rows)
        s.mismatched = len(verdict.mismatched)
        early_late = truth.late_before_close(
            self.producers.sent[: self.close_seen_seq], expected, self.yesterday
        )
        s.late_mismatched = len(verdict.late_mismatched) + len(early_late)
        if early_late:
            s.problems.append(
                f"{len(early_late)} charges of {self.yesterday} produced before its close are late"
            )
        s.state_mismatched = len(verdict.state_mismatched)
        s.problems += (verdict.mismatched + verdict.late_mismatched + verdict.state_mismatched)[:20]
        s.late_rows = sum(1 for r in snap.rows.values() if r["late_charge_count"] > 0)
        s.revised_rows = sum(1 for r in snap.rows.values() if r["revision"] > 0)
        found, wanted, problems = await self.letters.check(expected.too_late)
        s.dlq_found, s.dlq_expected = found, wanted
        s.problems += problems


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
