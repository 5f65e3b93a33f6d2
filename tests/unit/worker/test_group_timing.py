"""How quickly a worker joins its group and takes a dead worker's partitions over: the settings."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from faust.tables import TableManager

from streams.config.settings import Settings
from streams.worker.app import app_options, create_app
from streams.worker.table_manager import ImmediateTableManager


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Settings read BILLING_* variables and ./.env: keep both out of these tests."""
    for name in list(os.environ):
        if name.upper().startswith("BILLING_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**fields: str) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("bootstrap", "seconds"),
    [
        ("127.0.0.1:9092", 2),
        ("localhost:9092,[::1]:9093", 2),
        ("kafka-1:9092", 10),
        ("127.0.0.1:1,k:9092", 10),
    ],
)
def test_the_session_timeout_is_short_only_on_a_broker_of_this_machine(bootstrap, seconds):
    s = settings(kafka_bootstrap=bootstrap)
    assert s.group_session_timeout == timedelta(seconds=seconds)
    assert app_options(s)["broker_session_timeout"] == seconds
    # four heartbeats per session at least: a busy machine may delay one without a rebalance
    assert app_options(s)["broker_heartbeat_interval"] == min(1.0, seconds / 4)


def test_a_session_timeout_that_is_set_is_used_on_any_broker():
    for bootstrap in ("127.0.0.1:9092", "kafka-1:9092"):
        s = settings(kafka_bootstrap=bootstrap, kafka_session_timeout="45s")
        assert app_options(s)["broker_session_timeout"] == 45


def test_static_membership_is_off_unless_an_instance_id_is_given():
    assert app_options(settings())["consumer_group_instance_id"] is None
    assert (
        app_options(settings(kafka_group_instance_id="worker-3"))["consumer_group_instance_id"] == "worker-3"
    )


def test_the_table_manager_is_fausts_without_the_pause():
    manager = app_options(settings())["TableManager"]
    assert manager is ImmediateTableManager and issubclass(manager, TableManager)
    assert manager.on_start is not TableManager.on_start


@pytest.mark.parametrize(
    ("bootstrap", "wait", "expected_ms"),
    [("127.0.0.1:9092", None, 100), ("kafka-1:9092", None, 1500), ("127.0.0.1:9092", "250ms", 250)],
)
async def test_the_worker_consumer_fetches_with_the_wait_in_force(bootstrap, wait, expected_ms):
    """Faust builds its consumer with a fixed 1.5 s fetch wait; the embedded broker holds a
    fetch that long even when records arrive, so on loopback the worker's consumer waits 0.1 s."""
    fields = {"kafka_bootstrap": bootstrap, **({"kafka_fetch_max_wait": wait} if wait else {})}
    app = create_app(settings(**fields))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == expected_ms
    finally:
        await consumer.stop()
