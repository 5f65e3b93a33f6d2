"""The worker's metric bookkeeping, without a broker: flush accounting and partition hand-over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import generate_latest

from schemas.charge import Charge
from streams.rules.batch import Batch
from streams.sink.rows import FlushResult
from streams.worker.metrics import Metrics


def charge(when: datetime, i: int) -> Charge:
    return Charge(
        event_id=f"e{i}",
        occurred_at=when,
        account_id="a",
        user_id="u",
        provider="openai",
        charge_type="completion",
        prompt_tokens=1,
        completion_tokens=1,
    )


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_flush_accounting_and_partition_gauges() -> None:
    m = Metrics()
    t0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
    batch = Batch(ZoneInfo("UTC"))
    batch.add_record(0, 10, [charge(t0, 1), charge(t0 + timedelta(minutes=1), 2)], [0, 1])
    batch.add_record(3, 7, [], [])  # a record that held only bad input still moves the offset
    m.observe_flush(2, batch, FlushResult(charges=2, duplicates=1, rows_written=1, seconds=0.1, late=1), 0.25)
    m.observe_dlq("invalid_json")
    assert value(m, "billing_records_total") == 2
    assert value(m, "billing_charges_accepted_total") == 1
    assert value(m, "billing_charges_duplicate_total") == 1
    assert value(m, "billing_charges_late_total") == 1
    assert value(m, "billing_rows_flushed_total") == 1
    assert value(m, "billing_flush_duration_seconds_count") == 1
    assert value(m, "billing_dlq_records_total", reason="invalid_json") == 1
    assert value(m, "billing_partition_applied_offset", partition="0") == 10
    assert value(m, "billing_partition_applied_offset", partition="3") == 7
    assert (
        value(m, "billing_partition_event_time_seconds", partition="0")
        == (t0 + timedelta(minutes=1)).timestamp()
    )
    assert value(m, "billing_partition_event_time_seconds", partition="3") is None
    assert m.applied(0) == 10 and m.applied(5) is None

    older = Batch(ZoneInfo("UTC"))  # a replayed, older batch never moves the gauges back
    older.add_record(0, 4, [charge(t0 - timedelta(hours=1), 3)], [0])
    m.observe_flush(1, older, FlushResult(1, 0, 0, 0.0), 0.01)
    assert value(m, "billing_partition_applied_offset", partition="0") == 10
    assert (
        value(m, "billing_partition_event_time_seconds", partition="0")
        == (t0 + timedelta(minutes=1)).timestamp()
    )


def test_lag_is_clamped_and_revoked_partitions_vanish() -> None:
    m = Metrics()
    m.set_lag(1, end_offset=100, next_offset=40)
    m.set_lag(2, end_offset=5, next_offset=9)  # Tansu's end offset can trail the position
    m.on_retry(ConnectionRefusedError(), 1)
    assert value(m, "billing_consumer_lag", partition="1") == 60
    assert value(m, "billing_consumer_lag", partition="2") == 0
    assert value(m, "billing_postgres_retries_total", error="ConnectionRefusedError") == 1
    m.forget_partitions({1, 2, 7})
    text = generate_latest(m.registry).decode()
    assert 'partition="1"' not in text and 'partition="2"' not in text


def test_registries_are_per_app() -> None:
    Metrics()
    Metrics()  # a second app in the same process registers without "duplicated timeseries"
