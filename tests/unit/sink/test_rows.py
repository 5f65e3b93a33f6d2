"""The rows the flush copies into its staging tables: every delta's values under the staging
table's column names, in the order of the row key."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from streams.rules.pending import SUMMED, DailyKey, ModelKey
from streams.rules.settle import RowDelta
from streams.sink import sql
from streams.sink.rows import staging_records

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
        st.lists(_counts, min_size=len(SUMMED), max_size=len(SUMMED)),
        _counts,
        _counts,
        _counts,
        _counts,
        st.sampled_from([None, "USD", "EUR"]),
    )


@given(st.booleans().flatmap(lambda m: st.lists(_delta(m), min_size=1, unique_by=lambda d: d.key)))
def test_records_name_every_value_in_the_staging_columns_in_key_order(deltas: list[RowDelta]) -> None:
    key = sql.MODEL_KEY if isinstance(deltas[0].key, ModelKey) else sql.KEY
    values = {
        tuple(d.key): [*d.sums, d.charge_count, d.late_charge_count, d.cost_nanos, d.unpriced_charge_count]
        for d in deltas
    }
    currency = {tuple(d.key): d.currency for d in deltas if d.currency is not None}
    records = staging_records(values, currency)
    assert [r[: len(key)] for r in records] == sorted(d.key for d in deltas)
    by_key = {d.key: d for d in deltas}
    for record in records:
        d = by_key[record[: len(key)]]  # type: ignore[index]
        assert dict(zip(sql.delta_columns(key), record, strict=True)) == {
            **d.key._asdict(),
            **dict(zip(SUMMED, d.sums, strict=True)),
            "charge_count": d.charge_count,
            "late_charge_count": d.late_charge_count,
            "cost_nanos": d.cost_nanos,
            "unpriced_charge_count": d.unpriced_charge_count,
            "currency": d.currency,
        }
