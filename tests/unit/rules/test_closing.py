"""The closing rule's pure parts: which day is due, which partitions still lag."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from streams.rules.closing import closing_target, lagging, moved_on

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")


def test_the_due_day_is_the_last_whose_end_plus_grace_has_passed():
    now = datetime(2026, 12, 3, 0, 30, tzinfo=UTC)
    assert closing_target(now, UTC_ZONE, timedelta(hours=1), None) == date(2026, 12, 1)
    assert closing_target(now, UTC_ZONE, timedelta(minutes=10), None) == date(2026, 12, 2)
    assert closing_target(now, UTC_ZONE, timedelta(minutes=10), date(2026, 12, 2)) is None  # done
    assert closing_target(now, UTC_ZONE, timedelta(minutes=10), date(2026, 11, 20)) == date(2026, 12, 2)


def test_the_due_day_follows_the_billing_zone_and_its_dst():
    # 2026-11-01 lasts 25 hours in New York: it ends at 05:00Z on Nov 2
    assert closing_target(datetime(2026, 11, 2, 4, 59, tzinfo=UTC), NY, timedelta(0), None) == date(
        2026, 10, 31
    )
    assert closing_target(datetime(2026, 11, 2, 5, 0, tzinfo=UTC), NY, timedelta(0), None) == date(
        2026, 11, 1
    )


def test_a_partition_lags_until_applied_up_to_its_observed_end():
    ends = {0: 10, 1: 0, 2: 5}
    assert lagging(ends, {0: 9, 2: 4}) == {}
    assert lagging(ends, {0: 8, 2: 4}) == {0: 1}
    assert lagging(ends, {0: 9}) == {2: 5}  # never applied anything: all of it unread
    assert lagging({3: 7}, {3: 100}) == {}


def test_an_observation_is_void_once_a_partition_started_over():
    assert not moved_on({0: 1, 1: None}, {0: 1, 1: 4})  # first read of partition 1: same incarnation
    assert moved_on({0: 1, 1: 2}, {0: 1, 1: 5})  # partition 1 is a new source now
