"""The worker's own Prometheus metrics (beside faust-streaming's sensor, same registry).

Why a registry per app instead of prometheus_client's global one: tests build several apps in
one process, and a metric registered twice in one registry is an error. Counters count what a
worker did since it started (Prometheus handles restarts with `rate()`/`increase()`); after a
crash, records processed again are counted again here, while Postgres counts them once. The
ledger is Postgres; these numbers are for watching it move.

Names are part of the interface (the Grafana dashboard and alerts query them), so they are
listed in docs/operations.md and a test checks the dashboard against a real scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streams.rules.batch import Batch
from streams.sink.rows import FlushResult

# Flush latency spans a fast COPY (milliseconds) and a Postgres outage (minutes of retries).
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)
FAUST_PREFIX = "billing_faust"  # fixed, so dashboards do not depend on BILLING_APP_ID
# Model names come from producers: past this many distinct ones, unpriced models share "other",
# so a flood of made-up names cannot grow the metrics without bound.
MAX_UNPRICED_MODELS = 100


def process_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """`registry` (a new one by default) with the process, platform and GC collectors: what
    every process of ours exports beside its own metrics (the worker's, the API's)."""
    r = registry or CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=r)
    PlatformCollector(registry=r)
    GCCollector(registry=r)
    return r


#: The gauges kept per partition of the charges topic: (name, help).
PER_PARTITION: tuple[tuple[str, str], ...] = (
    (
        "billing_partition_event_time_seconds",
        "latest occurred_at this worker applied per partition (the watermark's inputs)",
    ),
    ("billing_partition_applied_offset", "highest offset of the partition whose effect is in Postgres"),
    ("billing_partition_end_offset", "the partition's end offset (high watermark)"),
    (
        "billing_consumer_lag",
        "records of the partition not yet in Postgres: end offset - next offset to apply",
    ),
    (
        "billing_unread_before_close",
        "records of the partition still to apply before the next due day can close",
    ),
)


class Metrics:
    """Every metric the worker exports, created in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = process_registry(registry)

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=r)

        def gauge(name: str, documentation: str, *labels: str) -> Gauge:
            return Gauge(name, documentation, labels, registry=r)

        def per_partition(name: str, documentation: str) -> Gauge:
            return gauge(name, documentation, "partition")

        self.records = counter("billing_records", "Kafka records of the charges topic flushed")
        self.charges_accepted = counter(
            "billing_charges_accepted", "valid charges flushed to Postgres, re-sent duplicates excluded"
        )
        self.duplicates = counter(
            "billing_charges_duplicate", "re-sent charges (event_id already seen) dropped"
        )
        self.late = counter("billing_charges_late", "charges added to a day that was already final")
        self.dlq = counter("billing_dlq_records", "records sent to the DLQ", "reason")
        self.rows = counter("billing_rows_flushed", "daily_billing_records rows inserted or updated")
        self.flush_seconds = Histogram(
            "billing_flush_duration_seconds",
            "time for one flush to become durable, Postgres retries included",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.pg_retries = counter(
            "billing_postgres_retries", "failed Postgres attempts that were retried", "error"
        )
        self.pg_up = gauge("billing_postgres_up", "1 while the sink holds a Postgres connection")
        self.ready = gauge("billing_ready", "1 while /ready answers 200")
        self.assigned = gauge(
            "billing_assigned_partitions", "partitions of the charges topic this worker owns"
        )
        # Per partition of the charges topic, in PER_PARTITION's order.
        (self.event_time, self.applied_offset, self.end_offset, self.lag, self.unread_before_close) = (
            per_partition(name, doc) for name, doc in PER_PARTITION
        )
        self.open_days = gauge("billing_open_days", "billing days that still have provisional rows")
        self.closed_through = gauge(
            "billing_closed_through_seconds", "end of the last final billing day, as unix time"
        )
        self.oldest_open_day_age = gauge(
            "billing_oldest_open_day_age_seconds",
            "how long ago the oldest day that is not final ended (0 while it has not ended)",
        )
        self.unpriced = Counter(
            "billing_charges_unpriced",
            "charges counted without a cost: no price for their model (add one with billing prices set)",
            ["provider", "model"],
            registry=r,
        )
        self.cost = Counter(
            "billing_cost_nanos",
            "what the charges this worker committed cost, in nano-units (10^-9) of the currency",
            ["currency"],
            registry=r,
        )
        self._unpriced_names: set[tuple[str, str]] = set()
        self._applied: dict[int, int] = {}
        self._event_time: dict[int, float] = {}

    def observe_flush(self, records: int, batch: Batch, result: FlushResult, seconds: float) -> None:
        """Account for one durable flush of `records` Kafka records."""
        self.records.inc(records)
        self.charges_accepted.inc(result.charges - result.duplicates)
        self.duplicates.inc(result.duplicates)
        self.late.inc(result.late)
        self.rows.inc(result.rows_written)
        self.flush_seconds.observe(seconds)
        if result.cost_nanos:
            self.cost.labels(result.currency or "").inc(result.cost_nanos)
        for provider, model, charges in result.unpriced:
            name = (provider, model or "(none)")
            if name not in self._unpriced_names:
                if len(self._unpriced_names) >= MAX_UNPRICED_MODELS:
                    name = (provider, "other")
                self._unpriced_names.add(name)
            self.unpriced.labels(*name).inc(charges)
        for partition, mark in batch.marks.items():
            if mark.max_offset > self._applied.get(partition, -1):
                self._applied[partition] = mark.max_offset
                self.applied_offset.labels(str(partition)).set(mark.max_offset)
            if mark.max_event_time is not None:
                stamp = mark.max_event_time.timestamp()
                if stamp > self._event_time.get(partition, -math.inf):
                    self._event_time[partition] = stamp
                    self.event_time.labels(str(partition)).set(stamp)

    def observe_dlq(self, reason: str) -> None:
        self.dlq.labels(reason).inc()

    def on_retry(self, exc: BaseException, attempt: int) -> None:
        """The sink's `on_retry` hook."""
        self.pg_retries.labels(type(exc).__name__).inc()

    def applied(self, partition: int) -> int | None:
        """The highest offset of `partition` this worker made durable since it was assigned."""
        return self._applied.get(partition)

    def set_lag(self, partition: int, end_offset: int, next_offset: int) -> None:
        self.end_offset.labels(str(partition)).set(end_offset)
        # Clamped: on Tansu the end offset under-reports and can trail the position.
        self.lag.labels(str(partition)).set(max(0, end_offset - next_offset))

    def set_days(self, open_days: int, final_until: float | None, now: float | None = None) -> None:
        """Open days, and the instant up to which every day is final (None: no day closed yet)."""
        self.open_days.set(open_days)
        if final_until is not None:
            self.closed_through.set(final_until)
        if now is not None and final_until is not None:
            # final_until is the end of the last closed day: the next day ends a day later.
            self.oldest_open_day_age.set(max(0.0, now - (final_until + 86400)))

    def set_unread(self, unread: dict[int, int], partitions: Iterable[int]) -> None:
        """What each partition still has to apply before the due day can close (0: caught up)."""
        for partition in partitions:
            self.unread_before_close.labels(str(partition)).set(unread.get(partition, 0))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the series of partitions this worker no longer owns (another worker reports them)."""
        for partition in partitions:
            self._applied.pop(partition, None)
            self._event_time.pop(partition, None)
            for gauge in (self.applied_offset, self.event_time, self.end_offset, self.lag):
                try:
                    gauge.remove(str(partition))
                except KeyError:
                    pass
