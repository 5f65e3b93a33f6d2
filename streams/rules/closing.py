"""When a billing day may close, as pure functions (the worker's `DayCloser` applies them).

The rule: day D closes once every partition of the charges topic has been applied up to its end
as observed at a moment after end(D) + BILLING_GRACE. Every charge that reached the topic by then
is in the rows when they become final; a charge that arrives later is late, and only such a
charge is. A partition with unread records holds every day open, however long the worker was
down, so a backlog is never counted late, and a backfill into an empty installation produces
final rows without revisions. A partition that started over (a new source) voids what was
observed of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from streams.charge.windows import last_day_ended_by


def closing_target(now: datetime, zone: ZoneInfo, grace: timedelta, closed: date | None) -> date | None:
    """The last day whose end + grace has passed, when it is not closed yet."""
    target = last_day_ended_by(now - grace, zone)
    return target if closed is None or target > closed else None


def lagging(ends: Mapping[int, int], applied: Mapping[int, int]) -> dict[int, int]:
    """Partitions not yet applied up to their observed end, with how many offsets they lack."""
    return {p: end - (applied.get(p, -1) + 1) for p, end in ends.items() if applied.get(p, -1) + 1 < end}


def moved_on(observed: Mapping[int, int | None], now: Mapping[int, int | None]) -> bool:
    """A partition that had a source when observed has another one now (it started over)."""
    return any(source is not None and now.get(p) != source for p, source in observed.items())
