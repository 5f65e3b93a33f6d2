"""Daily tumbling windows in the billing time zone: pure date arithmetic, DST included.

A billing day is a calendar date in BILLING_TIMEZONE, so it lasts 23, 24 or 25 hours. Every
function takes the zone explicitly; nothing here reads the server's local time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def billing_date(occurred_at: datetime, zone: ZoneInfo) -> date:
    """The day a charge is billed on. `occurred_at` must be timezone-aware."""
    if occurred_at.tzinfo is None:
        raise ValueError("naive datetime: billing dates are never read in local time")
    return occurred_at.astimezone(zone).date()


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the billing day begins: local midnight in `zone`."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the billing day ends, i.e. the next day's local midnight."""
    return day_start(day + timedelta(days=1), zone)


def day_length(day: date, zone: ZoneInfo) -> timedelta:
    """23 h, 24 h or 25 h: what DST does to a calendar day."""
    return day_end(day, zone) - day_start(day, zone)


def last_day_ended_by(instant: datetime, zone: ZoneInfo) -> date:
    """The latest day whose end is at or before `instant` (the day before `instant`'s day)."""
    return billing_date(instant, zone) - timedelta(days=1)
