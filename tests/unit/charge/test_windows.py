"""Daily windows in the billing zone: day bounds, DST-length days, local midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from streams.charge.windows import billing_date, day_end, day_length, day_start, last_day_ended_by

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_utc_day_bounds():
    d = date(2026, 5, 10)
    assert day_start(d, UTC_ZONE) == utc(2026, 5, 10)
    assert day_end(d, UTC_ZONE) == utc(2026, 5, 11)
    assert day_length(d, UTC_ZONE) == timedelta(hours=24)
    assert day_start(d, UTC_ZONE).utcoffset() == timedelta(0)


def test_utc_year_end_and_leap_day():
    assert day_end(date(2026, 12, 31), UTC_ZONE) == utc(2027, 1, 1)
    assert day_end(date(2028, 2, 28), UTC_ZONE) == utc(2028, 2, 29)
    assert day_length(date(2028, 2, 29), UTC_ZONE) == timedelta(hours=24)


def test_new_york_fall_back_day_is_25_hours():
    d = date(2026, 11, 1)
    assert day_start(d, NY) == utc(2026, 11, 1, 4)  # EDT midnight
    assert day_end(d, NY) == utc(2026, 11, 2, 5)  # EST midnight
    assert day_length(d, NY) == timedelta(hours=25)


def test_new_york_spring_forward_day_is_23_hours():
    d = date(2026, 3, 8)
    assert day_start(d, NY) == utc(2026, 3, 8, 5)  # EST midnight
    assert day_end(d, NY) == utc(2026, 3, 9, 4)  # EDT midnight
    assert day_length(d, NY) == timedelta(hours=23)


@pytest.mark.parametrize(
    "d",
    [
        date(2026, 3, 7),
        date(2026, 3, 9),
        date(2026, 10, 31),
        date(2026, 11, 2),
        date(2026, 7, 4),
        date(2026, 1, 15),
    ],
)
def test_new_york_ordinary_days_are_24_hours(d):
    assert day_length(d, NY) == timedelta(hours=24)


def test_kolkata_has_no_dst_and_half_hour_offset():
    d = date(2026, 1, 1)
    assert day_start(d, KOLKATA) == utc(2025, 12, 31, 18, 30)
    assert day_end(d, KOLKATA) == utc(2026, 1, 1, 18, 30)
    assert day_length(d, KOLKATA) == timedelta(hours=24)


def test_days_tile_without_gap_or_overlap():
    d = date(2026, 10, 25)
    for _ in range(20):
        assert day_end(d, NY) == day_start(d + timedelta(days=1), NY)
        d += timedelta(days=1)
    year = sum((day_length(date(2026, 1, 1) + timedelta(days=i), NY) for i in range(365)), timedelta())
    assert year == timedelta(days=365)


@pytest.mark.parametrize(
    "instant,expected",
    [
        (utc(2026, 5, 11, 3, 59, 59), date(2026, 5, 10)),  # 23:59:59 EDT
        (utc(2026, 5, 11, 4, 0, 0), date(2026, 5, 11)),  # 00:00 EDT
        (utc(2026, 1, 11, 4, 59, 59), date(2026, 1, 10)),  # 23:59:59 EST
        (utc(2026, 1, 11, 5, 0, 0), date(2026, 1, 11)),  # 00:00 EST
        # the 25-hour day: 00:30 EST after the fall-back is still Nov 1 until 05:00Z on Nov 2
        (utc(2026, 11, 2, 4, 30), date(2026, 11, 1)),
        (utc(2026, 11, 2, 5, 0), date(2026, 11, 2)),
        # the 23-hour day: 23:59 EDT on Mar 8 is 03:59Z on Mar 9
        (utc(2026, 3, 9, 3, 59), date(2026, 3, 8)),
        (utc(2026, 3, 9, 4, 0), date(2026, 3, 9)),
    ],
)
def test_billing_date_new_york_around_midnight(instant, expected):
    assert billing_date(instant, NY) == expected


@pytest.mark.parametrize(
    "instant,expected",
    [
        (utc(2026, 5, 10, 18, 29, 59), date(2026, 5, 10)),  # 23:59:59 IST
        (utc(2026, 5, 10, 18, 30, 0), date(2026, 5, 11)),  # 00:00 IST
        (utc(2026, 5, 10, 0, 0, 0), date(2026, 5, 10)),  # 05:30 IST
        (utc(2026, 5, 9, 23, 59, 59), date(2026, 5, 10)),  # UTC says the 9th, Kolkata the 10th
    ],
)
def test_billing_date_kolkata_around_midnight(instant, expected):
    assert billing_date(instant, KOLKATA) == expected


def test_billing_date_does_not_depend_on_the_input_offset():
    same = [
        utc(2026, 5, 10, 23, 30),
        datetime(2026, 5, 11, 5, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 5, 10, 19, 30, tzinfo=NY),
    ]
    assert {billing_date(i, UTC_ZONE) for i in same} == {date(2026, 5, 10)}
    assert {billing_date(i, KOLKATA) for i in same} == {date(2026, 5, 11)}
    assert {billing_date(i, NY) for i in same} == {date(2026, 5, 10)}


def test_billing_date_consistent_with_day_bounds():
    for zone in (UTC_ZONE, NY, KOLKATA):
        for d in (date(2026, 3, 8), date(2026, 11, 1), date(2026, 5, 10)):
            start, end = day_start(d, zone), day_end(d, zone)
            assert billing_date(start, zone) == d
            assert billing_date(end - timedelta(microseconds=1), zone) == d
            assert billing_date(end, zone) == d + timedelta(days=1)


def test_naive_datetime_raises():
    with pytest.raises(ValueError, match="naive"):
        billing_date(datetime(2026, 5, 10, 12, 0), UTC_ZONE)
    with pytest.raises(ValueError):
        last_day_ended_by(datetime(2026, 5, 10, 12, 0), NY)


def test_last_day_ended_by():
    assert last_day_ended_by(utc(2026, 5, 11), UTC_ZONE) == date(2026, 5, 10)  # exactly at the end
    assert last_day_ended_by(utc(2026, 5, 10, 23, 59, 59), UTC_ZONE) == date(2026, 5, 9)
    assert last_day_ended_by(utc(2026, 11, 2, 4, 59), NY) == date(2026, 10, 31)
    assert last_day_ended_by(utc(2026, 11, 2, 5, 0), NY) == date(2026, 11, 1)
    for zone in (UTC_ZONE, NY, KOLKATA):
        d = date(2026, 3, 8)
        assert last_day_ended_by(day_end(d, zone), zone) == d
        assert last_day_ended_by(day_end(d, zone) - timedelta(microseconds=1), zone) == d - timedelta(days=1)
