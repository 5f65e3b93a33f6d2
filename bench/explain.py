"""Where one flush's Postgres time goes: each write statement under EXPLAIN (ANALYZE, BUFFERS, WAL).

The sink component figure says how many charges a flush moves per second, not which statement
pays for it. Here the sink writes the tables first (warm-up flushes of the same records, so the
rows, the dedup ledger and their indexes are those of a running worker, not empty tables); then
one more chunk, built as the worker builds it (batch_charges charges, one lane's share of its
partitions), goes through the sink's own flush transaction on a connection that stands in for the
sink's: each write statement runs once, under EXPLAIN ANALYZE, with the arguments the sink bound,
and the reads in between run as usual. The whole flush is rolled back, so nothing is left behind.

Per statement: the time Postgres took (planning and execution), the shared buffers it hit, read
and dirtied, and the write-ahead log it wrote, per charge of the chunk. The figures of the plan's
top node include everything under it (the data-modifying CTEs are read to their end); the
commit record is not in them, the flush is rolled back. A checkpoint shortly before makes the
first change of each page log the whole page, so WAL per charge swings between runs: the count of
full-page images says how much of it that was. EXPLAIN plans with the arguments' values
(a custom plan) where the worker's prepared statements may settle on a generic one: these plans
are an INSERT from a staging table or unnest(), or index lookups over a few rows, either way,
so only the planning time can differ, and it is shown apart. The timings carry EXPLAIN ANALYZE's
own per-row clock reads, a small share with plans of two or three nodes. The COPY that fills a
staging table has no plan: its wall time (client encoding included) stands in its row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg

from bench.components import decode_batch
from bench.infra import Bench
from streams.charge.decode import Limits
from streams.ops.prices import seed_defaults
from streams.sink import sql
from streams.sink.postgres import PostgresSink
from tests.support import settings_from

EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) "
#: The statements of a flush that write (or lock) rows, by the name they are reported under.
WRITES = {
    sql.LOCK_PARTITIONS: "partition locks",
    sql.RECORD_SEEN: "dedup ledger insert",
    sql.UPSERT: "daily upsert",
    sql.UPSERT_MODELS: "model upsert",
    sql.ADVANCE: "fences advance",
}
#: The staging tables filled by COPY, by the name their copy is reported under.
STAGES = {
    sql.STAGE_SEEN: "dedup keys staged (COPY)",
    sql.STAGE_DAILY: "daily deltas staged (COPY)",
    sql.STAGE_MODELS: "model deltas staged (COPY)",
}


@dataclass(frozen=True)
class Explained:
    """One statement's EXPLAIN ANALYZE figures."""

    statement: str
    planning_ms: float
    execution_ms: float  # triggers included
    hit: int  # shared buffers found in Postgres's cache (planning included)
    read: int  # shared buffers read from the OS
    dirtied: int  # shared buffers this statement made dirty
    wal_bytes: int
    wal_records: int
    wal_fpi: int  # full-page images among them: the first change of a page after a checkpoint
    fed: int  # rows the arrays or the staging table brought (the first scan's), -1 without one
    returned: int  # rows the first data-modifying node returned (RETURNING), -1 without one
    conflicts: int  # rows an INSERT found already there (ON CONFLICT), -1 without one

    @property
    def total_ms(self) -> float:
        return self.planning_ms + self.execution_ms

    def describe(self, charges: int) -> tuple[str, str]:
        """(µs per charge, the rest) for a row of the results table."""
        per = max(charges, 1)
        rows = f"; {self.fed:,} rows in" if self.fed >= 0 else ""
        rows += f", {self.conflicts:,} already there" if self.conflicts >= 0 else ""
        return (
            f"{self.total_ms * 1000 / per:.2f} µs/charge",
            f"{self.total_ms:.1f} ms for {charges:,} charges (planning {self.planning_ms:.2f} ms){rows}; "
            f"buffers hit {self.hit:,} read {self.read:,} dirtied {self.dirtied:,}; "
            f"WAL {self.wal_bytes / per:,.0f} B/charge ({self.wal_records:,} records, "
            f"{self.wal_fpi:,} full pages)",
        )


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan's nodes, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def explained(statement: str, output: str | list[dict[str, Any]]) -> Explained:
    """The figures of one `EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON)` result, as text or parsed.
    The top node's counters include every node under it; planning's buffers are added."""
    top = (json.loads(output) if isinstance(output, str) else output)[0]
    plan, planning = top["Plan"], top.get("Planning", {})

    def blocks(kind: str) -> int:
        return int(plan.get(f"Shared {kind} Blocks", 0)) + int(planning.get(f"Shared {kind} Blocks", 0))

    def first(*node_types: str) -> int:
        found = (n for n in nodes(plan) if n["Node Type"] in node_types)
        node = next(found, None)
        return -1 if node is None else int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))

    conflicts = [int(n["Conflicting Tuples"]) for n in nodes(plan) if "Conflicting Tuples" in n]
    return Explained(
        statement,
        float(top.get("Planning Time", 0.0)),
        float(top["Execution Time"]),
        blocks("Hit"),
        blocks("Read"),
        blocks("Dirtied"),
        int(plan.get("WAL Bytes", 0)),
        int(plan.get("WAL Records", 0)),
        int(plan.get("WAL FPI", 0)),
        first("Function Scan", "Seq Scan"),  # unnest() or a staging table
        first("ModifyTable"),
        sum(conflicts) if conflicts else -1,
    )


class Explaining:
    """Stands in for the sink's connection for one flush: every write statement runs once, under
    EXPLAIN ANALYZE, and answers the sink as the statement itself would; the rest passes through."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.figures: list[Explained] = []

    def transaction(self) -> Any:
        return self.conn.transaction()  # a savepoint: the caller holds the outer transaction

    async def _explain(self, query: str, args: tuple[Any, ...]) -> Explained:
        figures = explained(WRITES[query], await self.conn.fetchval(EXPLAIN + query, *args))
        self.figures.append(figures)
        return figures

    async def execute(self, query: str, *args: Any) -> str:
        if query in WRITES:
            await self._explain(query, args)
            return "EXPLAINED"
        return cast(str, await self.conn.execute(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        if query == sql.RECORD_SEEN:  # `SELECT count(*)` of the keys inserted, as RETURNING gave them
            return (await self._explain(query, args)).returned
        return await self.conn.fetchval(query, *args)

    async def copy_records_to_table(self, table: str, *, records: list[tuple[Any, ...]]) -> str:
        """The staging COPY: no plan to explain, so its wall time and the WAL it wrote (none, the
        staging tables are temporary) stand as its figures."""
        wal = await self.conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        started = time.perf_counter()
        status = await self.conn.copy_records_to_table(table, records=records)
        ms = (time.perf_counter() - started) * 1000
        wal_bytes = await self.conn.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", wal)
        self.figures.append(
            Explained(STAGES[table], 0.0, ms, 0, 0, 0, int(wal_bytes), 0, 0, len(records), -1, -1)
        )
        return cast(str, status)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if query in WRITES:  # the rows locked: EXPLAIN has taken the locks, this reads them back
            await self._explain(query, args)
        return cast(list[asyncpg.Record], await self.conn.fetch(query, *args))


@dataclass
class FlushPlan:
    charges: int  # in the explained transaction
    records: int
    warm_charges: int  # flushed before, the tables' content
    statements: list[Explained]

    def rows(self) -> list[tuple[str, str, str]]:
        """(measurement, result, notes) for the results table: each statement, then their sum."""
        out = [(f"explain: {s.statement}", *s.describe(self.charges)) for s in self.statements]
        total = sum(s.total_ms for s in self.statements)
        note = (
            f"one lane's transaction of a flush: {self.charges:,} charges in {self.records:,} records, "
            f"after {self.warm_charges:,} charges flushed into the same tables; rolled back"
        )
        out.append(
            (
                "explain: the write statements together",
                f"{total * 1000 / max(self.charges, 1):.2f} µs/charge",
                note,
            )
        )
        return out


def cut(records: int, charges_of: Callable[[int], int], limit: int) -> int:
    """Where the last chunk starts: the fewest records at the end that hold `limit` charges (the
    worker's batch_charges), or all of them; the records before it are the warm-up."""
    total = 0
    for i in range(records - 1, -1, -1):
        total += charges_of(i)
        if total >= limit:
            return i
    return 0


async def explain_flush(
    bench: Bench, records: list[tuple[bytes, bytes]], topic: str, batch_records: int = 2000
) -> FlushPlan:
    """Flush all but the last chunk of `records` into a fresh database, `batch_records` at a time
    as the sink component does, then explain the last chunk's flush and roll it back."""
    database = await bench.new_database("explain")
    settings = settings_from(bench.env(database, topic, "explain"))
    limits = Limits.for_record(datetime.now(UTC), settings.max_clock_skew, settings.zone)
    n = len(records)
    start = cut(
        n, lambda i: len(decode_batch(records, settings, limits, i, i + 1, True)), settings.batch_charges
    )
    chunk = decode_batch(records, settings, limits, start, n, True)
    lane = chunk.split(settings.sink_connections)[0]  # one connection's transaction of the flush
    sink = PostgresSink(settings)
    await sink.start()
    try:
        await sink.run(seed_defaults)
        warm = 0
        for i in range(0, start, batch_records):
            batch = decode_batch(records, settings, limits, i, min(i + batch_records, start), True)
            warm += (await sink.flush(batch)).charges

        async def rolled_back(conn: asyncpg.Connection) -> list[Explained]:
            stand_in = Explaining(conn)
            outer = conn.transaction()
            await outer.start()
            try:  # the flush transaction itself, without the lanes and retries around it
                await sink._write(cast(asyncpg.Connection, stand_in), lane)
            finally:
                await outer.rollback()
            return stand_in.figures

        statements = await sink.run(rolled_back)
    finally:
        await sink.stop()
    return FlushPlan(len(lane), len(lane.records), warm, statements)
