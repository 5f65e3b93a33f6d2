"""The pure parts of replay and rebuild: offset specs, timestamps, bisection and the check of a broker's answer,
and the rebuild's fold (dedup, range, lateness, fence) over fake records. No broker, no Postgres."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.cli.replay import parse_timestamp
from streams.config.settings import Settings
from streams.ops.rebuild import _Collector
from streams.ops.replay import answer_checks_out, expand_offsets, first_offset_at_or_after, parse_offsets

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# --- offsets -----------------------------------------------------------------------------------


def test_parse_offsets_pairs_all_and_earliest():
    assert parse_offsets("0:1200,3:0") == {0: 1200, 3: 0}
    assert parse_offsets(" 1 : 5 , all:earliest ") == {1: 5, None: None}
    assert parse_offsets("all:0") == {None: 0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "expected PARTITION:OFFSET"),
        ("0:-1", "expected PARTITION:OFFSET"),
        ("a:1", "expected PARTITION:OFFSET"),
        ("0:1,,1:2", "expected PARTITION:OFFSET"),
        ("0:1,0:2", "given twice"),
        ("all:1,all:2", "given twice"),
        ("0:latest", "expected PARTITION:OFFSET"),
    ],
)
def test_parse_offsets_errors_are_one_line(text: str, message: str):
    with pytest.raises(ValueError, match=message) as info:
        parse_offsets(text)
    assert "\n" not in str(info.value)


def test_expand_offsets_explicit_pairs_override_all():
    assert expand_offsets({None: 0, 2: 50}, range(4)) == {0: 0, 1: 0, 2: 50, 3: 0}
    assert expand_offsets({1: None}, range(4)) == {1: None}


def test_expand_offsets_names_unknown_partitions():
    with pytest.raises(ValueError, match=r"unknown partition\(s\) 8, 9: the topic has partitions 0..7"):
        expand_offsets({8: 0, 9: 1, 0: 0}, range(8))


# --- timestamps --------------------------------------------------------------------------------


def test_parse_timestamp_forms():
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_timestamp("2026-11-20T10:00:00Z", berlin, NOW) == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert parse_timestamp("2026-11-20T10:00:00+01:00", UTC, NOW) == datetime(2026, 11, 20, 9, tzinfo=UTC)
    naive = parse_timestamp("2026-11-20T10:00:00", berlin, NOW)  # read in BILLING_TIMEZONE
    assert naive == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert parse_timestamp("2026-11-20", berlin, NOW) == datetime(2026, 11, 19, 23, tzinfo=UTC)
    assert parse_timestamp("6h", UTC, NOW) == NOW - timedelta(hours=6)
    assert parse_timestamp("90m ago", UTC, NOW) == NOW - timedelta(minutes=90)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "12", ""])
def test_parse_timestamp_errors(text: str):
    with pytest.raises(ValueError, match="bad timestamp"):
        parse_timestamp(text, UTC, NOW)


# --- bisection and the check of a broker's answer ----------------------------------------------


def reader(stamps: Sequence[int]) -> tuple[Callable[[int], Awaitable[int]], list[int]]:
    """A fake "timestamp at offset" that records which offsets were read."""
    reads: list[int] = []

    async def at(offset: int) -> int:
        reads.append(offset)
        return stamps[offset]

    return at, reads


def lower_bound(stamps: Sequence[int], target: int) -> int:
    return next((i for i, s in enumerate(stamps) if s >= target), len(stamps))


@pytest.mark.parametrize("target", [0, 5, 10, 11, 55, 99, 100, 101, 1000])
async def test_bisect_matches_linear_scan_on_sorted_stamps(target: int):
    stamps = list(range(0, 101, 1))[::1]
    at, reads = reader(stamps)
    assert await first_offset_at_or_after(at, 0, len(stamps), target) == lower_bound(stamps, target)
    assert len(reads) <= 8  # log2(101) + 1: single records, never a scan


async def test_bisect_lands_on_the_first_of_equal_stamps():
    stamps = [10, 20, 20, 20, 20, 20, 20, 30, 40]
    at, _ = reader(stamps)
    assert await first_offset_at_or_after(at, 0, len(stamps), 20) == 1
    assert await first_offset_at_or_after(at, 0, len(stamps), 21) == 7
    all_equal = [7] * 50
    at, _ = reader(all_equal)
    assert await first_offset_at_or_after(at, 0, 50, 7) == 0
    assert await first_offset_at_or_after(at, 0, 50, 8) == 50


async def test_bisect_respects_the_range_and_the_empty_range():
    stamps = [1, 2, 3, 4, 5, 6, 7, 8]
    at, reads = reader(stamps)
    assert await first_offset_at_or_after(at, 3, 6, 0) == 3  # the first kept offset
    assert await first_offset_at_or_after(at, 3, 6, 100) == 6  # the end: nothing that late
    assert await first_offset_at_or_after(at, 5, 5, 1) == 5
    assert all(3 <= r < 6 for r in reads)


@pytest.mark.parametrize("seed", range(20))
async def test_bisect_on_out_of_order_stamps_returns_a_crossing_point(seed: int):
    """Skewed producer clocks: not necessarily the first match, but always a place where the
    stamps cross the target, found with logarithmically many reads."""
    import random

    rng = random.Random(seed)
    stamps = [i * 10 + rng.randint(-35, 35) for i in range(200)]
    target = rng.randint(0, 2000)
    at, reads = reader(stamps)
    found = await first_offset_at_or_after(at, 0, len(stamps), target)
    assert found == len(stamps) or stamps[found] >= target
    assert found == 0 or stamps[found - 1] < target
    assert len(reads) <= 9


async def test_answer_check_accepts_right_answers_and_rejects_tansu_style_ones():
    stamps = [100, 200, 200, 300, 400]
    at, _ = reader(stamps)
    assert await answer_checks_out(at, 1, 0, 5, 200)  # first of the equal ones
    assert await answer_checks_out(at, 0, 0, 5, 50)  # before everything: the start
    assert await answer_checks_out(at, 5, 0, 5, 401)  # after everything: the end
    assert not await answer_checks_out(at, 2, 0, 5, 200)  # a later one of equal stamps
    assert not await answer_checks_out(at, 0, 0, 5, 250)  # Tansu answers 0 by append time
    assert not await answer_checks_out(at, 4, 0, 5, 250)  # too far
    assert not await answer_checks_out(at, 5, 0, 5, 400)  # "none" although offset 4 matches
    assert not await answer_checks_out(at, 7, 0, 5, 250)  # beyond the end
    assert not await answer_checks_out(at, 0, 1, 5, 50)  # before the first kept offset


# --- the rebuild's fold ------------------------------------------------------------------------


def record(
    partition: int, offset: int, stamp: datetime, charges: list[dict], key: str = "a1", headers: Any = ()
) -> SimpleNamespace:
    value = json.dumps(charges if len(charges) > 1 else charges[0]).encode()
    ms = int(stamp.timestamp() * 1000)
    return SimpleNamespace(
        partition=partition, offset=offset, timestamp=ms, key=key.encode(), value=value, headers=headers
    )


def charge(event_id: str, when: datetime, prompt: int = 10, user: str = "u1") -> dict:
    return {
        "event_id": event_id,
        "occurred_at": when.isoformat(),
        "account_id": "a1",
        "user_id": user,
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": prompt,
        "completion_tokens": 1,
    }


def test_collector_judges_each_record_by_its_own_timestamp_and_waived_rules():
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    at = datetime(2026, 9, 1, 12, tzinfo=UTC)
    collector = _Collector(settings)
    ahead = at + timedelta(hours=1)  # an hour ahead of the record's timestamp: future
    for r in [
        record(0, 0, at, [charge("e1", at, 10), charge("e1", at, 10)]),  # same id twice in a record
        record(0, 1, at, [charge("e2", ahead, 99)]),
        record(0, 2, ahead, [charge("e3", ahead, 20)]),  # the same time, stamped later: fine
        record(0, 3, at, [charge("e6", at, 5)], key="other"),  # key mismatch
        record(1, 0, at, [charge("e7", ahead, 7)], headers=[("billing-waive", b"future_timestamp")]),
    ]:
        collector.add(r, None)
    assert [(c.partition, c.offset, c.position, c.event_id) for c in collector.batch.rows] == [
        (0, 0, 0, "e1"),
        (0, 0, 1, "e1"),
        (0, 2, 0, "e3"),
        (1, 0, 0, "e7"),
    ]
    assert collector.records == 5 and collector.ends == {0: 4, 1: 1}
    assert set(collector.first_records) == {0, 1}


def test_rebuild_refuses_when_retention_deleted_records_of_the_range():
    from streams.ops.rebuild import _refuse_if_trimmed

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    day = date(2026, 9, 10)
    start_ms = int(datetime(2026, 9, 10, tzinfo=UTC).timestamp() * 1000)
    collector = _Collector(settings)
    collector.oldest = {0: (0, start_ms + 3_600_000), 1: (500, start_ms - 3_600_000)}
    _refuse_if_trimmed(settings, collector, day)  # nothing deleted on 0; only older records on 1
    collector.oldest[2] = (120, start_ms - 60_000)  # deleted records may hold charges of the day
    with pytest.raises(ValueError, match="partition 2 of charges keeps records only from offset 120"):
        _refuse_if_trimmed(settings, collector, day)
