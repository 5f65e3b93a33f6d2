"""The column arrays the upserts bind: every delta's values in one position across the columns,
in the order of the row key."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from streams.rules.settle import DailyKey, ModelKey, RowDelta
from streams.sink.rows import delta_columns, delta_row

_names = st.sampled_from(["acme", "globex", "initech", "é", "Z"])
_days = st.sampled_from([date(2026, 12, 1), date(2026, 12, 2), date(2027, 1, 1)])
_counts = st.integers(0, 10**12)


def _delta(with_model: bool):  # type: ignore[no-untyped-def]
    key = (
        st.builds(ModelKey, _names, _names, _names, _names, _days, _names)
        if with_model
        else st.builds(DailyKey, _names, _names, _names, _days, _names)
    )
    return st.builds(
        RowDelta,
        key,
        st.lists(_counts, min_size=5, max_size=5),
        _counts,
        _counts,
        _counts,
        _counts,
        st.sampled_from([None, "USD", "EUR"]),
    )


@given(st.booleans().flatmap(lambda m: st.lists(_delta(m), min_size=1, unique_by=lambda d: d.key)))
def test_columns_are_the_rows_transposed_in_key_order(deltas: list[RowDelta]) -> None:
    rows = sorted(delta_row(d) for d in deltas)  # keys are unique: the key alone orders them
    assert delta_columns(deltas) == [list(column) for column in zip(*rows, strict=True)]
