"""Prometheus metrics of `billing api`, served at its own /metrics.

A registry per app (not prometheus_client's global one) for the reason the worker has one:
tests build several apps in one process. Routes are labelled by their template
(`/v1/accounts/{account_id}/usage`), never by the raw path, so an account id cannot turn into
a label value and multiply the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.worker.metrics import process_registry

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    """Requests, latency, and charges accepted and refused by reason."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = process_registry(registry)
        self.requests = Counter(
            "billing_api_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "billing_api_request_duration_seconds",
            "time to answer a request (an ingest answer includes Kafka's acknowledgement)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("billing_api_requests_in_flight", "requests being served now", registry=r)
        self.accepted = Counter(
            "billing_api_charges_accepted", "charges acknowledged by Kafka and answered 202", registry=r
        )
        self.refused = Counter(
            "billing_api_charges_refused", "request elements refused, by reason", ["reason"], registry=r
        )
        self.unavailable = Counter(
            "billing_api_delivery_failures",
            "ingest requests answered 503 because Kafka did not acknowledge in time",
            registry=r,
        )
