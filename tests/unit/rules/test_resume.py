"""Where a partition resumes after an assignment: never past a charge not yet billed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.rules.resume import rewinds


def test_a_commit_past_the_fence_moves_back_to_the_fence():
    assert rewinds({0: 24}, {0: 24}, {0: 19}) == {0: 19}


def test_a_stale_position_without_a_commit_moves_back_to_the_start():
    # Faust dropped 19..23 at a rebalance and left the fetch position at 24; nothing committed.
    assert rewinds({4: 24}, {}, {4: 19}) == {4: 0}
    assert rewinds({4: 24}, {4: None}, {4: 19}) == {4: 0}


def test_the_start_wins_over_the_fence_without_a_commit():
    # A new incarnation of the partition: its records are not the ones the fence counted.
    assert rewinds({1: 150}, {}, {1: 101}) == {1: 0}


def test_positions_at_or_before_both_stay():
    assert rewinds({0: 10, 1: 0, 2: 5}, {0: 10, 2: 5}, {0: 30, 1: 0, 2: 5}) == {}


def test_without_the_fences_the_committed_offset_decides():
    assert rewinds({0: 30, 1: 30}, {0: 12}, {}) == {0: 12, 1: 0}


def test_an_unknown_position_is_set():
    assert rewinds({0: None}, {0: 7}, {0: 9}) == {0: 7}


offsets = st.integers(min_value=0, max_value=1000)


@given(
    st.dictionaries(st.integers(0, 7), st.one_of(st.none(), offsets)),
    st.dictionaries(st.integers(0, 7), st.one_of(st.none(), offsets)),
    st.dictionaries(st.integers(0, 7), offsets),
)
def test_never_past_the_fence_the_commit_or_the_start(positions, committed, fences):
    moves = rewinds(positions, committed, fences)
    for partition, position in positions.items():
        resume = moves.get(partition, position)
        assert resume is not None
        if committed.get(partition):
            assert resume <= committed[partition]
            if partition in fences:
                assert resume <= fences[partition]
        else:
            assert resume == 0
        assert partition not in moves or position is None or moves[partition] < position
