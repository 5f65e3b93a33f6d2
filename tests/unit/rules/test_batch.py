"""Batch: the accepted charges of a take with their coordinates, and per-partition marks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.charge import Charge
from streams.rules.batch import Batch, PartitionMark
from streams.rules.pending import dedup_key

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")


def mk(n: int, **overrides: Any) -> Charge:
    body: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "occurred_at": "2026-05-10T11:00:00Z",
        "account_id": "acct-1",
        "user_id": "user-1",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 10,
        "completion_tokens": 10,
    }
    body.update(overrides)
    return Charge.model_validate(body)


def test_a_pending_charge_carries_its_coordinates_key_and_counts():
    c = mk(1, prompt_tokens=7, completion_tokens=5, cached_tokens=3, reasoning_tokens=2)
    batch = Batch(UTC_ZONE)
    batch.add_record(4, 100, [c])
    [row] = batch.rows
    assert (row.partition, row.offset, row.position) == (4, 100, 0)
    assert row.daily_key == ("acct-1", "user-1", "openai", date(2026, 5, 10), "completion")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (7, 5, 12)
    assert (row.cached_tokens, row.reasoning_tokens, row.event_id) == (3, 2, "evt-1")
    assert row.dedup_key == dedup_key("acct-1", "evt-1") and not row.accept_late


def test_the_idempotency_key_is_scoped_by_account():
    assert dedup_key("a", "req-42") != dedup_key("b", "req-42")
    assert dedup_key("ab", "c") != dedup_key("a", "bc")  # no ambiguity at the boundary
    assert len(dedup_key("a", "x")) == 16


def test_positions_default_to_the_order_in_the_record_or_are_given():
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 7, [mk(1), mk(2), mk(3)])
    batch.add_record(0, 8, [mk(4), mk(5)], positions=[2, 5])
    assert [(r.offset, r.position) for r in batch.rows] == [(7, 0), (7, 1), (7, 2), (8, 2), (8, 5)]


def test_two_copies_of_one_event_in_a_record_stay_two_rows():
    batch = Batch(UTC_ZONE)
    batch.add_record(1, 9, [mk(1), mk(1)])
    assert [(r.offset, r.position) for r in batch.rows] == [(9, 0), (9, 1)]


def test_the_same_record_delivered_twice_in_a_take_is_taken_once():
    batch = Batch(UTC_ZONE)
    assert batch.add_record(0, 10, [mk(1)])
    assert batch.add_record(0, 11, [mk(2)])
    assert not batch.add_record(0, 10, [mk(1)])  # a seek back re-delivered it
    assert not batch.add_record(0, 11, [mk(2)])
    assert batch.add_record(1, 10, [mk(3)])  # another partition has its own offsets
    assert len(batch) == 3 and batch.marks[0].charges == 2


def test_row_date_uses_the_zone():
    c = mk(1, occurred_at="2026-05-11T02:00:00Z")  # May 10, 22:00 in New York
    utc_batch, ny_batch = Batch(UTC_ZONE), Batch(NY)
    utc_batch.add_record(0, 0, [c])
    ny_batch.add_record(0, 0, [c])
    assert utc_batch.rows[0].day == date(2026, 5, 11)
    assert ny_batch.rows[0].day == date(2026, 5, 10)


def test_records_without_charges_still_advance_the_mark():
    batch = Batch(UTC_ZONE)
    assert batch.empty
    batch.add_record(5, 40, [])  # e.g. a record whose only element went to the DLQ
    assert not batch.empty and len(batch) == 0
    assert batch.marks[5] == PartitionMark(max_offset=40, max_event_time=None, charges=0)
    batch.add_record(5, 41, [mk(1)])
    batch.add_record(5, 42, [])
    assert (batch.marks[5].max_offset, batch.marks[5].charges) == (42, 1)


def test_max_event_time_per_partition():
    batch = Batch(UTC_ZONE)
    batch.add_record(
        0, 1, [mk(1, occurred_at="2026-05-10T11:00:00Z"), mk(2, occurred_at="2026-05-10T13:00:00Z")]
    )
    batch.add_record(0, 2, [mk(3, occurred_at="2026-05-10T12:00:00Z")])
    batch.add_record(
        1, 1, [mk(4, occurred_at="2026-05-10T15:00:00+05:30"), mk(5, occurred_at="2026-05-10T09:30:00-05:00")]
    )
    assert batch.marks[0].max_event_time == datetime(2026, 5, 10, 13, 0, tzinfo=UTC)
    assert batch.marks[1].max_event_time == datetime(2026, 5, 10, 14, 30, tzinfo=UTC)


def test_without_drops_charges_but_keeps_the_marks():
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 3, [mk(1), mk(2)], key=b"acct-1", value=b"[..]")
    less = batch.without({(0, 3, 1)})
    assert [r.event_id for r in less.rows] == ["evt-1"]
    assert less.marks[0].max_offset == 3 and (0, 3) in less.records


def test_only_keeps_some_records_with_their_own_marks():
    batch = Batch(UTC_ZONE)
    for offset in range(4):
        batch.add_record(0, offset, [mk(offset)], key=b"acct-1", value=b"{}")
    batch.add_record(1, 7, [mk(9)], key=b"acct-1", value=b"{}")
    part = batch.only({(0, 0), (0, 1)})
    assert sorted(part.marks) == [0] and part.marks[0].max_offset == 1 and part.marks[0].charges == 2
    assert [r.offset for r in part.rows] == [0, 1]


def test_split_keeps_whole_partitions_together():
    batch = Batch(UTC_ZONE)
    for p in range(4):
        for offset in range(p + 1):
            batch.add_record(p, offset, [mk(p * 10 + offset)], key=b"k", value=b"{}")
    parts = batch.split(2)
    assert len(parts) == 2
    seen = [sorted(part.marks) for part in parts]
    assert sorted(p for s in seen for p in s) == [0, 1, 2, 3]
    for part in parts:
        assert {r.partition for r in part.rows} <= set(part.marks)
        assert {w[0] for w in part.records} == set(part.marks)
