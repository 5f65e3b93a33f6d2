"""Ground truth for the fault harness, every column that carries meaning, from what was produced.

Plain arithmetic over the produced charges and their delivery coordinates; nothing here imports
the code under test. The one input taken from Postgres is what the system recorded when it
closed days (the closure mark of each partition: how far it had applied when a day closed),
because *when* a close happened is the system's decision; whether each charge then counts as
late follows from its offset and those marks alone:

- a charge at offset `o` of partition `p` was applied after the close of day C when C's mark of
  `p` is below `o`; it is late when its own day is at or before the latest such C;
- it is too late (dead-lettered) when that C lies `horizon` whole days or more after its day;
- of the copies of one (account_id, event_id), the first produced that is not too late counts:
  the harness sends a copy only after every earlier copy was applied (at or below its fence),
  so production order is commit order for copies of one key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tests.faults.producers import Sent
from tests.support import SUMS

Key = tuple[str, str, str, date, str]
Marks = dict[int, list[tuple[date, int]]]  # partition -> (closed_through, applied_offset)


@dataclass
class Expected:
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*SUMS, "charge_count"), 0))
    late: int = 0

    @property
    def on_time(self) -> int:
        return self.sums["charge_count"] - self.late


@dataclass
class Truth:
    rows: dict[Key, Expected]
    too_late: set[tuple[int, int]]  # (partition, offset) of charges that must be dead letters
    late: dict[int, bool]  # seq of each counted copy -> applied after its day closed


def billing_day(charge: Mapping[str, Any], zone: ZoneInfo) -> date:
    when = datetime.fromisoformat(str(charge["occurred_at"]).replace("Z", "+00:00"))
    return when.astimezone(zone).date()


def closed_before(marks: list[tuple[date, int]], offset: int) -> date | None:
    """The latest day whose close came before this offset was applied."""
    days = [through for through, applied in marks if applied < offset]
    return max(days) if days else None


def expected(sent: Iterable[Sent], marks: Marks, zone: ZoneInfo, horizon_days: int) -> Truth:
    rows: dict[Key, Expected] = defaultdict(Expected)
    counted: set[tuple[str, str]] = set()
    too_late: set[tuple[int, int]] = set()
    late: dict[int, bool] = {}
    for s in sorted(sent, key=lambda s: s.seq):
        c = s.charge
        day = billing_day(c, zone)
        closed = closed_before(marks.get(s.partition, []), s.offset)
        if closed is not None and (closed - day).days >= horizon_days:
            too_late.add((s.partition, s.offset))
            continue
        key = (c["account_id"], c["event_id"])
        if key in counted:
            continue
        counted.add(key)
        row = rows[(c["account_id"], c["user_id"], c["provider"], day, c["charge_type"])]
        prompt, completion = int(c["prompt_tokens"]), int(c["completion_tokens"])
        for column, value in zip(
            SUMS,
            (
                prompt,
                completion,
                prompt + completion,
                int(c.get("cached_tokens", 0)),
                int(c.get("reasoning_tokens", 0)),
                int(c.get("cache_write_tokens", 0)),
                int(c.get("reported_cost_nanos") or 0),
            ),
            strict=True,
        ):
            row.sums[column] += value
        row.sums["charge_count"] += 1
        late[s.seq] = closed is not None and day <= closed
        row.late += late[s.seq]
    return Truth(dict(rows), too_late, late)


@dataclass
class Snapshot:
    """What Postgres holds, read in one transaction so rows, marks and calendar agree."""

    rows: dict[Key, dict[str, Any]]
    marks: Marks
    closed_through: date | None
    sources: list[tuple[int, int, int | None]]  # (partition, incarnation, retired?)
    fences: dict[int, int]


async def snapshot(database: str, topic: str) -> Snapshot:
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch("SELECT * FROM daily_billing_records")
            closures = await conn.fetch(
                """SELECT s.partition, c.closed_through, c.applied_offset
                   FROM billing_source_closures c JOIN billing_sources s ON s.id = c.source_id
                   WHERE s.topic = $1""",
                topic,
            )
            closed = await conn.fetchval("SELECT closed_through FROM billing_calendar")
            sources = await conn.fetch(
                "SELECT partition, incarnation, retired_at FROM billing_sources WHERE topic = $1", topic
            )
            fences = await conn.fetch(
                "SELECT partition, applied_offset FROM billing_partitions WHERE topic = $1", topic
            )
    finally:
        await conn.close()
    marks: Marks = defaultdict(list)
    for partition, through, applied in closures:
        marks[partition].append((through, applied))
    return Snapshot(
        {(r["account_id"], r["user_id"], r["provider"], r["date"], r["charge_type"]): dict(r) for r in rows},
        dict(marks),
        closed,
        [(r[0], r[1], r[2]) for r in sources],
        {r[0]: r[1] for r in fences},
    )


@dataclass
class Verdict:
    mismatched: list[str] = field(default_factory=list)  # sums and charge_count
    late_mismatched: list[str] = field(default_factory=list)
    state_mismatched: list[str] = field(default_factory=list)  # revision, final or provisional

    @property
    def exact(self) -> bool:
        return not (self.mismatched or self.late_mismatched or self.state_mismatched)


def compare(truth: Truth, snap: Snapshot) -> Verdict:
    """Every row against ground truth, column by column, and its state against its history:
    revision 0 unless a final row gained a late charge (then at least 1, at most once per
    late charge); final exactly when its day is closed."""
    v = Verdict()
    for key in sorted(set(truth.rows) | set(snap.rows), key=str):
        want, got = truth.rows.get(key), snap.rows.get(key)
        if want is None or got is None:
            v.mismatched.append(f"{'unexpected' if want is None else 'missing'} row {key}")
            continue
        for column, value in want.sums.items():
            if got[column] != value:
                v.mismatched.append(f"{key} {column}: expected {value}, got {got[column]}")
        if got["late_charge_count"] != want.late:
            v.late_mismatched.append(
                f"{key} late_charge_count: expected {want.late}, got {got['late_charge_count']}"
            )
        revision = got["revision"]
        if want.late == 0:
            low, high = 0, 0
        elif want.on_time > 0:  # final when the close came, then gained late charges
            low, high = 1, want.late
        else:  # born final after its day closed: no revision for the first flush
            low, high = 0, want.late - 1
        if not low <= revision <= high:
            v.state_mismatched.append(f"{key} revision {revision}, expected {low}..{high} (late {want.late})")
        final = snap.closed_through is not None and key[3] <= snap.closed_through
        if (got["finalized_at"] is not None) != final:
            v.state_mismatched.append(
                f"{key} finalized_at {got['finalized_at']} but closed_through {snap.closed_through}"
            )
    return v


def state_problems(snap: Snapshot, ends: Mapping[int, int], closed_at_least: date) -> list[str]:
    """One source per partition (nothing started over), each fenced at its log end; the day
    closed across the downtime is closed."""
    problems = []
    incarnations = sorted((p, i) for p, i, _ in snap.sources)
    if incarnations != [(p, 1) for p in sorted({p for p, _ in incarnations})]:
        problems.append(f"unexpected sources: {incarnations}")
    for p, end in ends.items():
        if end > 0 and snap.fences.get(p) != end - 1:
            problems.append(f"partition {p} fenced at {snap.fences.get(p)}, log end {end}")
    if snap.closed_through is None or snap.closed_through < closed_at_least:
        problems.append(f"closed through {snap.closed_through}, expected at least {closed_at_least}")
    return problems


def late_before_close(
    before: list[Sent], truth: Truth, day: date, zone: ZoneInfo = ZoneInfo("UTC")
) -> list[Sent]:
    """The charges of `day` produced before its close was seen that count as late: none may.
    Fails loudly when there were none to check."""
    early = [s for s in before if billing_day(s.charge, zone) == day]
    if not early:
        raise AssertionError(f"no charge of {day} was produced before its close")
    return [s for s in early if truth.late.get(s.seq)]
