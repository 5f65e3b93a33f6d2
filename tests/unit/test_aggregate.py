"""Batch (rows + per-partition marks) and the pure daily fold with event_id dedup."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.charge import Charge
from streams.aggregate import PENDING_COLUMNS, Batch, PartitionMark, Totals, daily_key, fold

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


# --- Batch -------------------------------------------------------------------------------------------


def test_batch_rows_follow_pending_columns():
    c = mk(1, prompt_tokens=7, completion_tokens=5, cached_tokens=3, reasoning_tokens=2)
    batch = Batch(UTC_ZONE)
    batch.add_record(4, 100, [c])
    assert len(batch) == 1
    row = dict(zip(PENDING_COLUMNS, batch.rows[0], strict=True))
    assert row == {
        "event_id": "evt-1",
        "partition": 4,
        "offset": 100,
        "position": 0,
        "account_id": "acct-1",
        "user_id": "user-1",
        "provider": "openai",
        "date": date(2026, 5, 10),
        "charge_type": "completion",
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "total_tokens": 12,
        "cached_tokens": 3,
        "reasoning_tokens": 2,
    }


def row_values(batch: Batch, column: str) -> list:
    at = PENDING_COLUMNS.index(column)
    return [row[at] for row in batch.rows]


def test_batch_positions_default_to_the_order_in_the_record():
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 7, [mk(1), mk(2), mk(3)])
    assert row_values(batch, "position") == [0, 1, 2]


def test_batch_positions_given_explicitly():
    # the record held 6 elements; 2 and 5 were accepted, the rest went to the DLQ
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 7, [mk(1), mk(2)], positions=[2, 5])
    assert row_values(batch, "position") == [2, 5]
    assert row_values(batch, "event_id") == ["evt-1", "evt-2"]


def test_two_copies_of_one_event_in_a_record_stay_two_rows():
    batch = Batch(UTC_ZONE)
    batch.add_record(1, 9, [mk(1), mk(1)])
    rows = {(r[1], r[2], p) for r, p in zip(batch.rows, row_values(batch, "position"), strict=True)}
    assert rows == {(1, 9, 0), (1, 9, 1)}


def test_batch_row_date_uses_the_zone():
    c = mk(1, occurred_at="2026-05-11T02:00:00Z")  # May 10, 22:00 in New York
    utc_batch, ny_batch = Batch(UTC_ZONE), Batch(NY)
    utc_batch.add_record(0, 0, [c])
    ny_batch.add_record(0, 0, [c])
    date_at = PENDING_COLUMNS.index("date")
    assert utc_batch.rows[0][date_at] == date(2026, 5, 11)
    assert ny_batch.rows[0][date_at] == date(2026, 5, 10)


def test_batch_rows_of_a_multi_charge_record_share_the_offset():
    batch = Batch(UTC_ZONE)
    batch.add_record(2, 55, [mk(1), mk(2), mk(3)])
    assert [(r[0], r[1], r[2]) for r in batch.rows] == [("evt-1", 2, 55), ("evt-2", 2, 55), ("evt-3", 2, 55)]
    assert batch.marks[2].charges == 3


def test_batch_marks_max_offset_per_partition():
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 10, [mk(1)])
    batch.add_record(1, 3, [mk(2)])
    batch.add_record(0, 12, [mk(3)])
    batch.add_record(0, 11, [mk(4)])  # out of order within the batch: the max stays
    batch.add_record(1, 2, [mk(5)])
    assert batch.marks[0].max_offset == 12
    assert batch.marks[1].max_offset == 3
    assert batch.marks[0].charges == 3
    assert batch.marks[1].charges == 2
    assert len(batch) == 5


def test_records_without_charges_still_advance_the_mark():
    batch = Batch(UTC_ZONE)
    assert batch.empty
    batch.add_record(5, 40, [])  # e.g. a record whose only element went to the DLQ
    assert not batch.empty
    assert len(batch) == 0
    assert batch.marks[5] == PartitionMark(max_offset=40, max_event_time=None, charges=0)
    batch.add_record(5, 41, [mk(1)])
    batch.add_record(5, 42, [])
    assert batch.marks[5].max_offset == 42
    assert batch.marks[5].charges == 1
    assert len(batch) == 1


def test_batch_offset_zero_counts():
    batch = Batch(UTC_ZONE)
    batch.add_record(0, 0, [])
    assert batch.marks[0].max_offset == 0


def test_batch_max_event_time_per_partition():
    batch = Batch(UTC_ZONE)
    batch.add_record(
        0, 1, [mk(1, occurred_at="2026-05-10T11:00:00Z"), mk(2, occurred_at="2026-05-10T13:00:00Z")]
    )
    batch.add_record(0, 2, [mk(3, occurred_at="2026-05-10T12:00:00Z")])  # older: mark keeps 13:00
    # 09:30-05:00 is 14:30Z, the latest instant although its wall-clock text is the smallest
    batch.add_record(
        1, 1, [mk(4, occurred_at="2026-05-10T15:00:00+05:30"), mk(5, occurred_at="2026-05-10T09:30:00-05:00")]
    )
    assert batch.marks[0].max_event_time == datetime(2026, 5, 10, 13, 0, tzinfo=UTC)
    assert batch.marks[1].max_event_time == datetime(2026, 5, 10, 14, 30, tzinfo=UTC)


# --- daily_key / Totals / fold ---------------------------------------------------------------------


def test_daily_key():
    c = mk(1, occurred_at="2026-05-11T02:00:00Z", provider="anthropic", charge_type="tool")
    assert daily_key(c, UTC_ZONE) == ("acct-1", "user-1", "anthropic", date(2026, 5, 11), "tool")
    assert daily_key(c, NY) == ("acct-1", "user-1", "anthropic", date(2026, 5, 10), "tool")


def test_totals_add():
    t = Totals()
    t.add(mk(1, prompt_tokens=3, completion_tokens=4, cached_tokens=1, reasoning_tokens=2))
    t.add(mk(2, prompt_tokens=5, completion_tokens=6))
    assert t == Totals(
        prompt_tokens=8,
        completion_tokens=10,
        total_tokens=18,
        cached_tokens=1,
        reasoning_tokens=2,
        charge_count=2,
    )


def test_seed_parity_case():
    charges = [mk(1, prompt_tokens=10, completion_tokens=10), mk(2, prompt_tokens=20, completion_tokens=20)]
    out = fold(charges, UTC_ZONE)
    assert list(out) == [("acct-1", "user-1", "openai", date(2026, 5, 10), "completion")]
    t = out["acct-1", "user-1", "openai", date(2026, 5, 10), "completion"]
    assert t.charge_count == 2
    assert t.prompt_tokens == 30
    assert t.completion_tokens == 30
    assert t.total_tokens == 60


def test_fold_dedups_by_event_id_first_wins():
    first = mk(1, prompt_tokens=10, completion_tokens=10)
    resent = mk(1, prompt_tokens=10, completion_tokens=10)
    conflicting = mk(1, prompt_tokens=999, completion_tokens=1)  # same event_id: ignored
    out = fold([first, resent, mk(2), conflicting], UTC_ZONE)
    (t,) = out.values()
    assert t.charge_count == 2
    assert t.prompt_tokens == 20
    assert t.total_tokens == 40


def test_fold_dedup_is_global_not_per_key():
    # a re-sent event counts once even if (wrongly) re-sent with another charge_type
    out = fold([mk(1), mk(1, charge_type="tool")], UTC_ZONE)
    assert len(out) == 1
    assert next(iter(out))[4] == "completion"


def test_fold_separates_every_key_part():
    charges = [
        mk(1),
        mk(2, account_id="acct-2"),
        mk(3, user_id="user-2"),
        mk(4, provider="metaai"),
        mk(5, charge_type="plugin"),
        mk(6, occurred_at="2026-05-11T00:00:00Z"),
        mk(7),
    ]
    out = fold(charges, UTC_ZONE)
    assert len(out) == 6
    assert out["acct-1", "user-1", "openai", date(2026, 5, 10), "completion"].charge_count == 2
    assert sum(t.charge_count for t in out.values()) == 7
    assert sum(t.total_tokens for t in out.values()) == 7 * 20


def test_fold_across_local_midnight():
    a = mk(1, occurred_at="2026-05-11T03:59:59Z")  # 23:59:59 EDT May 10
    b = mk(2, occurred_at="2026-05-11T04:00:00Z")  # 00:00 EDT May 11
    ny = fold([a, b], NY)
    assert sorted(k[3] for k in ny) == [date(2026, 5, 10), date(2026, 5, 11)]
    utc = fold([a, b], UTC_ZONE)
    assert [k[3] for k in utc] == [date(2026, 5, 11)]


def test_fold_empty_and_generator():
    assert fold([], UTC_ZONE) == {}
    out = fold((mk(i) for i in range(5)), UTC_ZONE)
    assert next(iter(out.values())).charge_count == 5


def test_split_shares_whole_partitions_out_balanced_by_charges():
    batch = Batch(UTC_ZONE)
    sizes = {0: 50, 1: 10, 2: 30, 3: 25, 4: 0}  # partition 4: a record of bad input only
    for partition, n in sizes.items():
        batch.add_record(partition, 7, [mk(partition * 100 + i) for i in range(n)])
    parts = batch.split(2)
    assert len(parts) == 2
    assert sorted(p for part in parts for p in part.marks) == [0, 1, 2, 3, 4]
    for part in parts:
        assert {row[1] for row in part.rows} <= set(part.marks)
        assert all(part.marks[p] is batch.marks[p] for p in part.marks)
    assert sorted(len(part) for part in parts) == [55, 60]
    assert sorted(row[0] for part in parts for row in part.rows) == sorted(row[0] for row in batch.rows)
    assert batch.split(1) == [batch]
    assert len(batch.split(8)) == 5  # never an empty part
