"""Watermark and day closing (DESIGN §3): min over live partitions, idle ones ignored, monotonic close."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from streams.watermark import PartitionProgress, closed_through, is_late, watermark
from streams.windows import day_end

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
IDLE = timedelta(minutes=5)
GRACE = timedelta(hours=1)
NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)


def p(partition: int, event: datetime | None, seen_ago: timedelta | None) -> PartitionProgress:
    return PartitionProgress(partition, event, None if seen_ago is None else NOW - seen_ago)


# --- watermark ---------------------------------------------------------------------------------------


def test_watermark_is_min_over_partitions():
    progress = [
        p(0, NOW - timedelta(minutes=1), timedelta(seconds=1)),
        p(1, NOW - timedelta(minutes=30), timedelta(seconds=10)),
        p(2, NOW - timedelta(minutes=2), timedelta(minutes=1)),
    ]
    assert watermark(progress, NOW, IDLE) == NOW - timedelta(minutes=30)


def test_watermark_single_partition():
    assert watermark([p(3, NOW - timedelta(hours=2), timedelta(0))], NOW, IDLE) == NOW - timedelta(hours=2)


def test_idle_partition_ignored():
    progress = [
        p(0, NOW - timedelta(minutes=1), timedelta(seconds=1)),
        p(1, NOW - timedelta(days=3), IDLE + timedelta(seconds=1)),  # stuck far behind but idle
    ]
    assert watermark(progress, NOW, IDLE) == NOW - timedelta(minutes=1)


def test_idle_boundary():
    behind = NOW - timedelta(hours=5)
    ahead = NOW - timedelta(minutes=1)
    just_active = [p(0, ahead, timedelta(0)), p(1, behind, IDLE - timedelta(microseconds=1))]
    assert watermark(just_active, NOW, IDLE) == behind
    idle_for_exactly_the_timeout = [p(0, ahead, timedelta(0)), p(1, behind, IDLE)]
    assert watermark(idle_for_exactly_the_timeout, NOW, IDLE) == ahead


def test_idleness_is_wall_clock_not_event_time():
    # an old event applied just now keeps the partition live (it is replaying a backlog)
    progress = [p(0, NOW - timedelta(days=2), timedelta(seconds=1)), p(1, NOW, timedelta(seconds=1))]
    assert watermark(progress, NOW, IDLE) == NOW - timedelta(days=2)


def test_all_idle_is_none():
    progress = [p(0, NOW - timedelta(hours=1), timedelta(minutes=6)), p(1, NOW, timedelta(hours=1))]
    assert watermark(progress, NOW, IDLE) is None


def test_no_partitions_is_none():
    assert watermark([], NOW, IDLE) is None


def test_partitions_without_charges_ignored():
    progress = [
        p(0, None, None),
        p(1, None, timedelta(0)),
        p(2, NOW - timedelta(minutes=3), None),
        p(3, NOW - timedelta(minutes=9), timedelta(seconds=2)),
    ]
    assert watermark(progress, NOW, IDLE) == NOW - timedelta(minutes=9)
    assert watermark(progress[:3], NOW, IDLE) is None


def test_watermark_accepts_a_generator():
    gen = (p(i, NOW - timedelta(minutes=i), timedelta(0)) for i in range(4))
    assert watermark(gen, NOW, IDLE) == NOW - timedelta(minutes=3)


# --- closed_through ----------------------------------------------------------------------------------

D = date(2026, 5, 10)
END = datetime(2026, 5, 11, tzinfo=UTC)


def test_closed_by_watermark_at_end_plus_grace():
    # wall clock is close behind the watermark, so only the watermark can close the day
    mark = END + GRACE
    assert closed_through(mark, mark, UTC_ZONE, GRACE, IDLE, None) == D
    before = mark - timedelta(microseconds=1)
    assert closed_through(before, before, UTC_ZONE, GRACE, IDLE, None) == D - timedelta(days=1)


def test_watermark_within_grace_keeps_day_open():
    mark = END + timedelta(minutes=59)
    assert closed_through(mark, END + timedelta(minutes=61), UTC_ZONE, GRACE, IDLE, None) == date(2026, 5, 9)


def test_closed_by_wall_clock_at_end_plus_grace_plus_idle():
    now = END + GRACE + IDLE
    assert closed_through(None, now, UTC_ZONE, GRACE, IDLE, None) == D
    just_before = now - timedelta(microseconds=1)
    assert closed_through(None, just_before, UTC_ZONE, GRACE, IDLE, None) == D - timedelta(days=1)


def test_wall_clock_closes_even_with_a_lagging_watermark():
    stuck = END - timedelta(hours=3)  # one partition still reading yesterday's backlog
    assert closed_through(stuck, END + GRACE + IDLE, UTC_ZONE, GRACE, IDLE, None) == D


def test_watermark_ahead_of_wall_clock_closes():
    # the watermark (event time) can close a day before the wall-clock rule does
    now = END + GRACE  # wall clock rule needs END + GRACE + IDLE
    assert closed_through(None, now, UTC_ZONE, GRACE, IDLE, None) == D - timedelta(days=1)
    assert closed_through(END + GRACE, now, UTC_ZONE, GRACE, IDLE, None) == D


def test_closed_through_is_monotonic():
    current = date(2026, 5, 20)
    assert closed_through(None, NOW, UTC_ZONE, GRACE, IDLE, current) == current
    assert closed_through(END + GRACE, END + GRACE, UTC_ZONE, GRACE, IDLE, current) == current
    # and it still moves forward past `current`
    later = datetime(2026, 5, 30, tzinfo=UTC)
    assert closed_through(later, later, UTC_ZONE, GRACE, IDLE, current) == date(2026, 5, 28)


@pytest.mark.parametrize("step_minutes", [1, 17, 60])
def test_closed_through_never_moves_back_over_time(step_minutes):
    current = None
    now = NOW
    marks = [NOW - timedelta(hours=h) for h in (0, 30, 2, 50, 1, 0)]  # the watermark may jump back
    for mark in marks * 10:
        nxt = closed_through(mark, now, UTC_ZONE, GRACE, IDLE, current)
        assert current is None or nxt >= current
        current = nxt
        now += timedelta(minutes=step_minutes)


def test_closed_through_in_a_dst_zone():
    nov1 = date(2026, 11, 1)  # 25 hours in New York, ends 2026-11-02T05:00Z
    end = day_end(nov1, NY)
    assert end == datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
    assert closed_through(end + GRACE, end + GRACE, NY, GRACE, IDLE, None) == nov1
    # a 24-hour assumption would close it at 04:00Z + grace; it must still be open then
    early = datetime(2026, 11, 2, 5, 0, tzinfo=UTC) + GRACE - timedelta(seconds=1)
    assert closed_through(early, early, NY, GRACE, IDLE, None) == date(2026, 10, 31)
    mar8 = date(2026, 3, 8)  # 23 hours, ends 2026-03-09T04:00Z
    end = day_end(mar8, NY)
    assert closed_through(None, end + GRACE + IDLE, NY, GRACE, IDLE, None) == mar8
    assert closed_through(None, end + GRACE + IDLE - timedelta(seconds=1), NY, GRACE, IDLE, None) == date(
        2026, 3, 7
    )


def test_closed_through_uses_the_zone():
    # 2026-05-11T02:00Z: the UTC day of May 10 ended 2 h ago, the New York one has not ended yet.
    now = datetime(2026, 5, 11, 2, 0, tzinfo=UTC)
    assert closed_through(now, now, UTC_ZONE, GRACE, IDLE, None) == D
    assert closed_through(now, now, NY, GRACE, IDLE, None) == date(2026, 5, 9)


# --- is_late -----------------------------------------------------------------------------------------


def test_is_late():
    assert is_late(D, D) is True
    assert is_late(D - timedelta(days=3), D) is True
    assert is_late(D + timedelta(days=1), D) is False
    assert is_late(D, None) is False
