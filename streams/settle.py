"""What one flush adds to which daily row: the exactness rules as pure functions.

The sink runs them inside its flush transaction, between reading what Postgres knows (first
sightings of event_ids, the rows' offset fences, the day closures; all under the partitions'
locks) and writing the result. Doing the per-charge part here and sending Postgres one delta
per row keeps the database's work per row instead of per charge (measured: the per-charge
joins of an all-SQL version were three quarters of a flush).

The rules (DESIGN §4):
- a charge counts when its event_id was first seen at its very coordinates (partition,
  offset, position in the record); a copy elsewhere is a duplicate;
- a charge at or below its row's `last_offset` is already in the row (a re-read): skipped;
- duplicates still move the fence past themselves, so a replay long after their dedup entry
  expired finds them fenced off;
- a charge is late when its day had been closed by the time its partition passed the offset
  recorded at that closure (`billing_closures`), so a replay reaches the same verdict.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from streams.aggregate import DailyKey, PendingRow

Coordinates = tuple[int, int, int]  # partition, offset, position in the record
# Per partition, ascending: (closed_through, the partition's applied offset at that closure).
Closures = Mapping[int, Sequence[tuple[date, int]]]


def closures_by_partition(rows: Iterable[tuple[int, date, int]]) -> dict[int, list[tuple[date, int]]]:
    """(partition, closed_through, applied_offset) rows into the sorted `Closures` shape."""
    out: dict[int, list[tuple[date, int]]] = {}
    for partition, closed_through, applied_offset in rows:
        out.setdefault(partition, []).append((closed_through, applied_offset))
    for marks in out.values():
        marks.sort()
    return out


def closure_mark(closures: Closures, partition: int, day: date) -> int | None:
    """The partition's applied offset when `day` was first closed, or None while it is open."""
    marks = closures.get(partition, ())
    at = bisect.bisect_left(marks, (day, -(2**63)))
    return marks[at][1] if at < len(marks) else None


def first_sightings(rows: Iterable[PendingRow]) -> dict[str, Coordinates]:
    """Per event_id, the smallest coordinates it has in this batch: the copy that counts when
    Postgres has not seen the event_id before."""
    first: dict[str, Coordinates] = {}
    for row in rows:
        where = (row[1], row[2], row[3])
        known = first.get(row[0])
        if known is None or where < known:
            first[row[0]] = where
    return first


@dataclass(slots=True)
class RowDelta:
    """What one flush adds to one daily row (fed by one partition)."""

    key: DailyKey
    partition: int
    sums: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])  # prompt … reasoning
    charge_count: int = 0
    late_charge_count: int = 0
    last_offset: int = -1


@dataclass(slots=True)
class Settlement:
    deltas: list[RowDelta]
    duplicates: int  # charges whose event_id counts elsewhere
    late: int  # counted charges of days that were already closed


def settle(
    rows: Iterable[PendingRow],
    sightings: Mapping[str, Coordinates],
    fences: Mapping[DailyKey, int],
    closures: Closures,
) -> Settlement:
    """Apply the rules above to a batch's charges.

    `sightings` maps every event_id of the batch to the coordinates that count (Postgres' first
    sighting, or the batch's own for a new one); `fences` holds `last_offset` of the rows that
    exist. A delta is kept when it counts a charge or moves the fence of an existing row.
    """
    deltas: dict[tuple[DailyKey, int], RowDelta] = {}
    marks: dict[tuple[int, date], int | None] = {}
    duplicates = late = 0
    for event_id, partition, offset, position, a, u, p, day, t, *sums in rows:
        counted = sightings[event_id] == (partition, offset, position)
        if not counted:
            duplicates += 1
        key = (a, u, p, day, t)
        fence = fences.get(key)
        if fence is not None and offset <= fence:
            continue
        delta = deltas.get((key, partition))
        if delta is None:
            delta = deltas[(key, partition)] = RowDelta(key, partition)
        if offset > delta.last_offset:
            delta.last_offset = offset
        if not counted:
            continue
        totals = delta.sums
        for i, value in enumerate(sums):
            totals[i] += value
        delta.charge_count += 1
        mark_key = (partition, day)
        if mark_key not in marks:
            marks[mark_key] = closure_mark(closures, partition, day)
        mark = marks[mark_key]
        if mark is not None and offset > mark:
            delta.late_charge_count += 1
            late += 1
    kept = [d for d in deltas.values() if d.charge_count or d.key in fences]
    return Settlement(kept, duplicates, late)
