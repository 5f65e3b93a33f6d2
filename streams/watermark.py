"""Event-time watermark and the rule that closes billing days (DESIGN §3), as pure functions.

The watermark is the minimum, over partitions, of the latest `occurred_at` seen; a partition
that has had no charge for `idle_timeout` (wall clock) stops holding it back. A day closes when
the watermark passes its end plus `grace`, or when the wall clock passes end + grace +
idle_timeout, so a quiet system still closes its days. Closing is monotonic: a day never reopens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from streams.windows import last_day_ended_by


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What the sink has applied from one partition."""

    partition: int
    max_event_time: datetime | None
    last_event_at: datetime | None  # wall clock of the last charge applied


def watermark(
    progress: Iterable[PartitionProgress], now: datetime, idle_timeout: timedelta
) -> datetime | None:
    """Minimum latest event time over the partitions that are not idle; None if all are."""
    active = [
        p.max_event_time
        for p in progress
        if p.max_event_time is not None
        and p.last_event_at is not None
        and now - p.last_event_at < idle_timeout
    ]
    return min(active) if active else None


def closed_through(
    mark: datetime | None,
    now: datetime,
    zone: ZoneInfo,
    grace: timedelta,
    idle_timeout: timedelta,
    current: date | None,
) -> date | None:
    """The last closed billing day given the watermark and the wall clock (never moves back)."""
    candidates = [last_day_ended_by(now - grace - idle_timeout, zone)]
    if mark is not None:
        candidates.append(last_day_ended_by(mark - grace, zone))
    if current is not None:
        candidates.append(current)
    return max(candidates)


def is_late(day: date, closed: date | None) -> bool:
    """A charge is late when its billing day is already closed."""
    return closed is not None and day <= closed
