"""The sink's exactness rules (streams.rules.settle), alone and against whole streams replayed at random."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.rules.pending import DailyKey, PendingCharge, dedup_key
from streams.rules.settle import (
    ClosureMarks,
    admit,
    closure_marks,
    first_sightings,
    horizon_days,
    is_too_late,
    settle,
)

DAY = date(2026, 11, 20)
KEY: DailyKey = ("acct-1", "user-1", "openai", DAY, "completion")


def charge(
    event_id: str,
    partition: int,
    offset: int,
    position: int = 0,
    day: date = DAY,
    prompt: int = 10,
    account: str = "acct-1",
    accept_late: bool = False,
) -> PendingCharge:
    return PendingCharge(
        dedup_key(account, event_id),
        partition,
        offset,
        position,
        account,
        "user-1",
        "openai",
        day,
        "completion",
        prompt,
        5,
        prompt + 5,
        1,
        0,
        event_id,
        accept_late,
    )


def test_new_charges_count_into_one_delta_per_row() -> None:
    rows = [charge("e1", 2, 10), charge("e2", 2, 10, 1), charge("e3", 5, 12, prompt=7)]
    sources = {2: 20, 5: 50}
    result = settle(rows, sources, first_sightings(rows, sources), {})
    assert (result.duplicates, result.late) == (0, 0)
    [delta] = result.deltas  # one row fed by two partitions: one delta, never two
    assert (delta.key, delta.sums, delta.charge_count) == (KEY, [27, 15, 42, 3, 0, 0, 0], 3)


def test_first_sightings_take_the_smallest_coordinates_of_the_source() -> None:
    rows = [charge("e1", 2, 15, 3), charge("e1", 2, 10, 4), charge("e1", 2, 10, 2)]
    assert first_sightings(rows, {2: 7}) == {dedup_key("acct-1", "e1"): (7, 10, 2)}


def test_a_copy_whose_winner_is_elsewhere_is_a_duplicate() -> None:
    rows = [charge("e1", 2, 20)]
    winners = {dedup_key("acct-1", "e1"): (9, 5, 0)}  # counted from another source
    result = settle(rows, {2: 7}, winners, {})
    assert (result.deltas, result.duplicates) == ([], 1)


def test_the_same_event_id_of_two_accounts_counts_twice() -> None:
    rows = [charge("req-42", 1, 3, account="a"), charge("req-42", 2, 3, account="b")]
    sources = {1: 1, 2: 2}
    result = settle(rows, sources, first_sightings(rows, sources), {})
    assert (result.duplicates, sum(d.charge_count for d in result.deltas)) == (0, 2)


def test_admit_skips_what_the_source_applied_and_only_that_source() -> None:
    rows = [charge("e1", 2, 9), charge("e2", 2, 10), charge("e3", 2, 11), charge("e4", 3, 4)]
    admission = admit(rows, {2: 20, 3: 30}, {20: 10, 30: -1}, {}, 35)
    assert [c.event_id for c in admission.admitted] == ["e3", "e4"]  # partition 3's own fence
    assert (admission.reread, admission.too_late) == (2, [])


def test_closure_marks_answer_which_day_was_closed_before_an_offset() -> None:
    marks = closure_marks([(7, DAY, 50), (7, DAY - timedelta(days=2), 30), (8, DAY, -1)])
    assert marks[7].closed_before(30) is None  # applied before the first close
    assert marks[7].closed_before(31) == DAY - timedelta(days=2)
    assert marks[7].closed_before(51) == DAY
    assert marks[8].closed_before(0) == DAY  # a source born after the close: all of it late


def test_late_when_applied_after_the_close() -> None:
    marks = closure_marks([(7, DAY, 50)])
    rows = [charge("e1", 2, 50), charge("e2", 2, 51), charge("e3", 2, 52, day=DAY + timedelta(days=1))]
    result = settle(rows, {2: 7}, first_sightings(rows, {2: 7}), marks)
    by_day = {d.key.date: d for d in result.deltas}
    assert result.late == 1
    assert (by_day[DAY].charge_count, by_day[DAY].late_charge_count) == (2, 1)
    assert by_day[DAY + timedelta(days=1)].late_charge_count == 0


def test_too_late_depends_on_the_closures_not_on_any_clock() -> None:
    assert horizon_days(35 * 86400) == 35 and horizon_days(60) == 1
    old = DAY - timedelta(days=35)
    assert is_too_late(charge("e", 0, 1, day=old), DAY, 35)
    assert not is_too_late(charge("e", 0, 1, day=old + timedelta(days=1)), DAY, 35)
    assert not is_too_late(charge("e", 0, 1, day=old), None, 35)  # nothing closed yet: a backfill
    assert not is_too_late(charge("e", 0, 1, day=old, accept_late=True), DAY, 35)  # operator said so
    marks = {7: ClosureMarks((DAY,), (10,))}
    admission = admit([charge("a", 2, 10, day=old), charge("b", 2, 11, day=old)], {2: 7}, {}, marks, 35)
    assert [c.event_id for c in admission.admitted] == ["a"]  # applied before the close
    assert [c.event_id for c in admission.too_late] == ["b"]


# --- the rules against a whole stream, batched, interleaved and replayed at random ----------------


def stream(rng: random.Random, n: int, move_resends: bool) -> list[PendingCharge]:
    """Charges of a few accounts on three partitions (an account lands on several, as producers with
    different partitioners make it), multi-charge records, ~20% re-sent later; a re-send copies
    the original, or with `move_resends` moves it to another day."""
    offsets = [0, 0, 0]
    out: list[PendingCharge] = []
    for i in range(n):
        partition = rng.randrange(3)
        if out and rng.random() < 0.2:
            original = rng.choice(out)
            day = original.day + timedelta(days=1) if move_resends else original.day
            copy = original._replace(partition=partition, offset=offsets[partition], position=0, day=day)
            out.append(copy)
        else:
            account = f"acct-{rng.randrange(3)}"
            for position in range(rng.choice((1, 1, 2, 3))):
                out.append(
                    PendingCharge(
                        dedup_key(account, f"e{i}-{position}"),
                        partition,
                        offsets[partition],
                        position,
                        account,
                        f"user-{rng.randrange(2)}",
                        "openai",
                        DAY + timedelta(days=rng.randrange(3)),
                        "completion",
                        rng.randrange(100),
                        1,
                        0,
                        0,
                        0,
                        f"e{i}-{position}",
                    )
                )
        offsets[partition] += 1
    return out


class Sink:
    """The sink's tables in memory: fences per source, the ledger of winners, rows, closures."""

    def __init__(self) -> None:
        self.sources = {0: 100, 1: 101, 2: 102}
        self.fences: dict[int, int] = {}
        self.ledger: dict[bytes, tuple[int, int, int]] = {}
        self.rows: dict[DailyKey, list[int]] = defaultdict(lambda: [0, 0, 0])  # prompt, count, late
        self.closures: list[tuple[int, date, int]] = []
        self.closed: date | None = None
        self.truth_late: dict[bytes, bool] = {}  # per key, was its day closed when first counted

    def close(self, day: date) -> None:
        self.closed = day
        self.closures += [(s, day, self.fences.get(s, -1)) for s in self.sources.values()]

    def flush(self, batch: list[PendingCharge]) -> None:
        marks = closure_marks(self.closures)
        admission = admit(batch, self.sources, self.fences, marks, 35)
        winners = first_sightings(admission.admitted, self.sources)
        for key, where in list(winners.items()):
            if key in self.ledger:
                winners[key] = self.ledger[key]
            else:
                self.ledger[key] = where
                self.truth_late[key] = (
                    self.closed is not None
                    and next(c.day for c in admission.admitted if c.dedup_key == key) <= self.closed
                )
        for delta in settle(admission.admitted, self.sources, winners, marks).deltas:
            r = self.rows[delta.key]
            r[0] += delta.sums[0]
            r[1] += delta.charge_count
            r[2] += delta.late_charge_count
        for c in batch:
            source = self.sources[c.partition]
            self.fences[source] = max(self.fences.get(source, -1), c.offset)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 150),
    replays=st.integers(0, 5),
    closes=st.integers(0, 3),
    move_resends=st.booleans(),
)
def test_batches_replays_and_closures_count_each_key_once(
    seed: int, n: int, replays: int, closes: int, move_resends: bool
) -> None:
    rng = random.Random(seed)  # deterministic: a failing example reproduces under any PYTHONHASHSEED
    charges = stream(rng, n, move_resends)
    sink = Sink()
    positions = [0, 0, 0]
    by_partition = [[c for c in charges if c.partition == p] for p in range(3)]
    close_day = DAY - timedelta(days=1)
    while any(positions[p] < len(by_partition[p]) for p in range(3)):
        p = rng.choice([q for q in range(3) if positions[q] < len(by_partition[q])])
        part = by_partition[p]
        end = positions[p] + rng.randint(1, 6)
        while end < len(part) and part[end].offset == part[end - 1].offset:
            end += 1  # a record's charges travel together
        sink.flush(part[positions[p] : end])
        if replays and rng.random() < 0.3:  # a crash: read again from an earlier record
            replays -= 1
            positions[p] = rng.randrange(0, end)
        else:
            positions[p] = end
        if closes and rng.random() < 0.15:
            closes -= 1
            close_day += timedelta(days=1)
            sink.close(close_day)
    distinct = {c.dedup_key for c in charges}
    assert sum(r[1] for r in sink.rows.values()) == len(distinct)  # each key counted exactly once
    firsts: dict[bytes, PendingCharge] = {}
    for c in charges:
        firsts.setdefault(c.dedup_key, c)
    if not move_resends:  # every copy carries the same content: the rows are fixed by the firsts
        truth: dict[DailyKey, list[int]] = defaultdict(lambda: [0, 0])
        for c in firsts.values():
            truth[c.daily_key][0] += c.prompt_tokens
            truth[c.daily_key][1] += 1
        assert {k: v[:2] for k, v in sink.rows.items()} == dict(truth)
    assert sum(r[2] for r in sink.rows.values()) == sum(sink.truth_late.values())


def test_cost_and_unpriced_charges_are_summed_per_row_and_per_model() -> None:
    def priced(c: PendingCharge) -> tuple[int, str] | None:
        return None if c.model == "unknown" else (c.prompt_tokens * 7, "USD")

    rows = [
        charge("e1", 0, 1)._replace(model="gpt-4o"),
        charge("e2", 0, 2, prompt=20)._replace(model="gpt-4o"),
        charge("e3", 0, 3, prompt=30)._replace(model="unknown"),
        charge("e1", 1, 9)._replace(model="gpt-4o"),  # a re-send: no cost twice
    ]
    sources = {0: 100, 1: 101}
    result = settle(rows, sources, first_sightings(rows, sources), {}, priced)
    [daily] = result.deltas
    assert (daily.cost_nanos, daily.unpriced_charge_count, daily.charge_count, daily.currency) == (
        210,
        1,
        3,
        "USD",
    )
    by_model = {d.key[3]: d for d in result.model_deltas}
    assert (by_model["gpt-4o"].cost_nanos, by_model["gpt-4o"].unpriced_charge_count) == (210, 0)
    assert (by_model["unknown"].cost_nanos, by_model["unknown"].unpriced_charge_count) == (0, 1)
    assert [sum(d.sums[i] for d in result.model_deltas) for i in range(len(daily.sums))] == daily.sums
    unpriced = settle(rows, sources, first_sightings(rows, sources), {})  # no book: nothing priced
    assert (unpriced.deltas[0].cost_nanos, unpriced.deltas[0].unpriced_charge_count) == (0, 3)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gpt-4o", "claude", "unknown", ""]),
            st.sampled_from(["user-1", "user-2"]),
            st.integers(0, 2),  # day offset
            st.integers(0, 1000),  # prompt tokens
            st.integers(0, 1000),  # of which cache writes (capped at the prompt below)
            st.integers(0, 10**12),  # the cost the caller reported
        ),
        max_size=40,
    ),
    st.integers(0, 3),  # days closed before the charges were applied
)
def test_every_daily_delta_is_the_sum_of_its_charges_whatever_their_models(
    drawn: list[tuple[str, str, int, int, int, int]], closed: int
) -> None:
    def priced(c: PendingCharge) -> tuple[int, str] | None:
        return None if c.model in ("unknown", "") else (c.prompt_tokens * 3 + len(c.model), "USD")

    rows = [
        charge(f"e{i}", 0, i, day=DAY + timedelta(days=d), prompt=p)._replace(
            model=m, user_id=u, cache_write_tokens=min(w, p - 1) if p else 0, reported_cost_nanos=r
        )
        for i, (m, u, d, p, w, r) in enumerate(drawn)
    ]
    sources = {0: 7}
    marks = {7: ClosureMarks((DAY + timedelta(days=closed - 1),), (-1,))} if closed else {}
    result = settle(rows, sources, first_sightings(rows, sources), marks, priced)
    truth: dict[DailyKey, list[int]] = defaultdict(lambda: [0] * 11)
    for c in rows:
        cost = priced(c)
        t = truth[c.daily_key]
        for i, n in enumerate((c.prompt_tokens, c.completion_tokens, c.total_tokens, c.cached_tokens)):
            t[i] += n
        t[4] += 1
        t[5] += bool(closed) and c.day <= DAY + timedelta(days=closed - 1)
        t[6] += cost[0] if cost else 0
        t[7] += cost is None
        t[8] += c.reasoning_tokens
        t[9] += c.cache_write_tokens
        t[10] += c.reported_cost_nanos
    found = {
        d.key: [
            *d.sums[:4],
            d.charge_count,
            d.late_charge_count,
            d.cost_nanos,
            d.unpriced_charge_count,
            d.sums[4],
            d.sums[5],
            d.sums[6],
        ]
        for d in result.deltas
    }
    assert found == dict(truth)
    assert len(result.deltas) == len(truth)
    currencies = {d.key: d.currency for d in result.deltas}
    for key in truth:
        models = {c.model for c in rows if c.daily_key == key}
        assert currencies[key] == ("USD" if models - {"unknown", ""} else None)
