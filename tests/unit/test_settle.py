"""The sink's exactness rules (streams.settle), alone and against replays of a whole stream."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.aggregate import DailyKey, PendingRow
from streams.settle import closure_mark, closures_by_partition, first_sightings, settle

DAY = date(2026, 11, 20)
KEY: DailyKey = ("acct-1", "user-1", "openai", DAY, "completion")


def row(
    event_id: str, partition: int, offset: int, position: int = 0, day: date = DAY, prompt: int = 10
) -> PendingRow:
    return (event_id, partition, offset, position, *KEY[:3], day, KEY[4], prompt, 5, prompt + 5, 1, 0)


def test_new_charges_count_and_move_the_fence() -> None:
    rows = [row("e1", 2, 10), row("e2", 2, 10, 1), row("e3", 2, 12, prompt=7)]
    result = settle(rows, first_sightings(rows), {}, {})
    assert (result.duplicates, result.late) == (0, 0)
    [delta] = result.deltas
    assert (delta.key, delta.partition, delta.last_offset) == (KEY, 2, 12)
    assert (delta.sums, delta.charge_count) == ([27, 15, 42, 3, 0], 3)


def test_a_resent_copy_in_the_batch_counts_once_but_fences_the_row() -> None:
    rows = [row("e1", 2, 10), row("e1", 2, 15, 3)]
    result = settle(rows, first_sightings(rows), {}, {})
    assert result.duplicates == 1
    [delta] = result.deltas
    assert (delta.charge_count, delta.sums[0], delta.last_offset) == (1, 10, 15)


def test_first_sightings_takes_the_smallest_coordinates() -> None:
    rows = [row("e1", 2, 15, 3), row("e1", 2, 10, 4), row("e1", 2, 10, 2)]
    assert first_sightings(rows) == {"e1": (2, 10, 2)}


def test_seen_elsewhere_is_a_duplicate_and_only_fences_an_existing_row() -> None:
    rows = [row("e1", 2, 20)]
    earlier = {"e1": (2, 5, 0)}
    assert settle(rows, earlier, {}, {}).deltas == []  # no row, nothing counted: nothing written
    result = settle(rows, earlier, {KEY: 9}, {})
    [delta] = result.deltas
    assert (result.duplicates, delta.charge_count, delta.sums, delta.last_offset) == (1, 0, [0] * 5, 20)


def test_a_replayed_charge_at_or_below_the_fence_is_skipped() -> None:
    rows = [row("e1", 2, 9), row("e2", 2, 10), row("e3", 2, 11)]
    result = settle(rows, first_sightings(rows), {KEY: 10}, {})
    [delta] = result.deltas
    assert (delta.charge_count, delta.last_offset) == (1, 11)
    assert settle(rows, first_sightings(rows), {KEY: 11}, {}).deltas == []


def test_late_when_the_partition_passed_the_closure_mark() -> None:
    closures = closures_by_partition([(2, DAY, 50), (2, date(2026, 11, 18), 30), (3, DAY, 0)])
    assert closure_mark(closures, 2, date(2026, 11, 17)) == 30  # first closure covering the day
    assert closure_mark(closures, 2, DAY) == 50
    assert closure_mark(closures, 2, date(2026, 11, 21)) is None  # still open
    rows = [row("e1", 2, 50), row("e2", 2, 51), row("e3", 2, 52, day=date(2026, 11, 21))]
    result = settle(rows, first_sightings(rows), {}, closures)
    assert result.late == 1
    by_day = {d.key[3]: d for d in result.deltas}
    assert (by_day[DAY].charge_count, by_day[DAY].late_charge_count) == (2, 1)
    assert by_day[date(2026, 11, 21)].late_charge_count == 0


def test_late_duplicates_are_not_late_charges() -> None:
    closures = closures_by_partition([(2, DAY, 0)])
    rows = [row("e1", 2, 5), row("e1", 2, 6)]
    result = settle(rows, first_sightings(rows), {}, closures)
    assert (result.late, result.duplicates, result.deltas[0].late_charge_count) == (1, 1, 1)


# --- the rules against a whole stream, batched and replayed at random ------------------------------


def stream(seed: int, n: int) -> list[PendingRow]:
    """Charges of a few keys on two partitions in offset order, ~20% of them re-sent later."""
    rng = random.Random(seed)
    rows: list[PendingRow] = []
    offsets = {0: 0, 1: 0}
    sent: list[PendingRow] = []
    for i in range(n):
        if sent and rng.random() < 0.2:
            original = rng.choice(sent)
            event_id, partition, account, key_rest = original[0], original[1], original[4], original[5:]
        else:
            account = f"acct-{rng.randrange(4)}"
            partition = hash(account) % 2
            event_id = f"e{i}"
            day = date(2026, 11, 20 + rng.randrange(2))
            key_rest = (
                f"user-{rng.randrange(2)}",
                "openai",
                day,
                "completion",
                rng.randrange(100),
                1,
                0,
                0,
                0,
            )
        offsets[partition] += 1
        new = (event_id, partition, offsets[partition], 0, account, *key_rest)
        rows.append(new)
        sent.append(new)
    return rows


class Ledger:
    """The sink's tables in memory: first sightings, rows with sums and fences."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int, int]] = {}
        self.rows: dict[DailyKey, list[int]] = defaultdict(lambda: [0, 0, -1])  # prompt, count, fence

    def flush(self, batch: list[PendingRow]) -> None:
        sightings = first_sightings(batch)
        for event_id, where in list(sightings.items()):
            sightings[event_id] = self.seen.setdefault(event_id, where)
        fences = {key: r[2] for key, r in self.rows.items()}
        for delta in settle(batch, sightings, fences, {}).deltas:
            r = self.rows[delta.key]
            r[0] += delta.sums[0]
            r[1] += delta.charge_count
            r[2] = max(r[2], delta.last_offset)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), replays=st.integers(0, 4))
def test_batches_and_replays_of_a_stream_count_each_event_id_once(seed: int, n: int, replays: int) -> None:
    rows = stream(seed, n)
    truth: dict[DailyKey, list[int]] = defaultdict(lambda: [0, 0])
    first: dict[str, PendingRow] = {}
    for r in rows:
        first.setdefault(r[0], r)
    for r in first.values():
        t = truth[(r[4], r[5], r[6], r[7], r[8])]
        t[0] += r[9]
        t[1] += 1
    rng = random.Random(seed)
    ledger = Ledger()
    by_partition = [[r for r in rows if r[1] == p] for p in (0, 1)]
    for part in by_partition:
        position = 0
        while position < len(part):
            end = position + rng.randint(1, 10)
            ledger.flush(part[position:end])
            if replays and rng.random() < 0.3:  # a crash: read again from an earlier offset
                replays -= 1
                position = rng.randrange(0, end)
            else:
                position = end
    assert {k: v[:2] for k, v in ledger.rows.items()} == dict(truth)
