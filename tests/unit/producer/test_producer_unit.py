"""The producer without a broker: how charges become records, and that no failure is swallowed."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.charge import Charge
from streams.charge.decode import Limits, decode_record
from streams.config.settings import Settings
from streams.producer.one_charge import create_charge
from streams.producer.producer import (
    MAX_RECORD_BYTES,
    BrokerUnavailableError,
    ChargeProducer,
    DeliveryError,
    encode_charge,
    set_profile_resolver,
    split_batches,
    to_charge,
)
from streams.testing.synthetic import synthetic_charges

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    now=NOW, max_clock_skew=timedelta(minutes=5), zone=ZoneInfo("UTC"), late_horizon=timedelta(days=35)
)
SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", charges_topic="charges")


def charges(n: int, accounts: int = 7, seed: int = 1) -> list[Charge]:
    return list(synthetic_charges(n, days=3, accounts=accounts, seed=seed, now=NOW))


def decoded(records: list[tuple[bytes, bytes]]) -> list[Charge]:
    out: list[Charge] = []
    for key, value in records:
        result = decode_record(value, key, LIMITS)
        assert result.rejections == []
        out.extend(result.charges)
    return out


# --- split_batches -------------------------------------------------------------------------


def test_split_batches_one_key_per_account_and_every_charge_once() -> None:
    sent = charges(3000, accounts=20)
    records = split_batches(sent)
    back = decoded(records)
    assert Counter(c.event_id for c in back) == Counter(c.event_id for c in sent)
    assert sorted(back, key=lambda c: c.event_id) == sorted(sent, key=lambda c: c.event_id)
    for key, value in records:
        assert {c["account_id"] for c in json.loads(value)} == {key.decode()}
    assert len(records) < len(sent) / 10  # batched, not one per charge


def test_split_batches_respects_count_limit_and_keeps_order() -> None:
    sent = [c.model_copy(update={"account_id": "acct-x"}) for c in charges(1234)]
    records = split_batches(sent, max_charges=500)
    assert [len(json.loads(v)) for _, v in records] == [500, 500, 234]
    assert [c.event_id for c in decoded(records)] == [c.event_id for c in sent]


def test_split_batches_respects_byte_limit() -> None:
    sent = charges(2000, accounts=3)
    limit = 20_000
    records = split_batches(sent, max_charges=10_000, max_bytes=limit)
    assert all(len(value) <= limit for _, value in records)
    assert len(decoded(records)) == len(sent)
    # a record is cut only when the next charge would not fit
    one = max(len(encode_charge(c)) for c in sent)
    by_key: dict[bytes, list[int]] = {}
    for key, value in records:
        by_key.setdefault(key, []).append(len(value))
    for sizes in by_key.values():
        assert all(size > limit - one - 1 for size in sizes[:-1])


def test_default_byte_limit_leaves_room_under_kafkas_message_max_bytes() -> None:
    assert MAX_RECORD_BYTES + 128 + 200 < 1_048_588  # value + longest key + record overhead


def test_wire_json_is_what_to_wire_describes() -> None:
    for charge in charges(50):
        assert json.loads(encode_charge(charge)) == charge.to_wire()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"cache_write_tokens": 2, "cached_tokens": 1, "reported_cost_nanos": 12_345},
        {"model": 'm\u00e9"\\\n\x00', "session_key": "s" * 512, "reference": "r", "user_profile_id": 7},
        {"user_profile_id": "p-\u4e2d", "occurred_at": "2026-11-23T13:30:00.5+01:30"},
    ],
)
def test_wire_bytes_are_the_models_own_serialization(extra: dict[str, Any]) -> None:
    charge = to_charge(BASE | {"occurred_at": NOW} | extra)
    exclude = None if charge.cache_write_tokens else {"cache_write_tokens"}
    assert encode_charge(charge) == charge.model_dump_json(exclude_none=True, exclude=exclude).encode()
    assert json.loads(encode_charge(charge)) == charge.to_wire()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=400),
    accounts=st.integers(min_value=1, max_value=12),
    max_charges=st.integers(min_value=1, max_value=60),
    max_bytes=st.integers(min_value=500, max_value=30_000),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_split_batches_properties(n: int, accounts: int, max_charges: int, max_bytes: int, seed: int) -> None:
    sent = charges(n, accounts=accounts, seed=seed)
    records = split_batches(sent, max_charges=max_charges, max_bytes=max_bytes)
    back = decoded(records)
    assert Counter(c.event_id for c in back) == Counter(c.event_id for c in sent)
    for key, value in records:
        items = json.loads(value)
        assert 1 <= len(items) <= max_charges
        assert len(value) <= max_bytes or len(items) == 1
        assert {i["account_id"] for i in items} == {key.decode()}
    for account in {c.account_id for c in sent}:  # per account, arrival order is kept
        assert [c.event_id for c in back if c.account_id == account] == [
            c.event_id for c in sent if c.account_id == account
        ]


# --- to_charge / resolver -------------------------------------------------------------------


BASE = {
    "account_id": "a1",
    "user_id": "u1",
    "provider": "openai",
    "charge_type": "completion",
    "prompt_tokens": 3,
    "completion_tokens": 4,
}


def test_to_charge_fills_event_id_and_time() -> None:
    before = datetime.now(UTC)
    one, two = to_charge(BASE), to_charge(BASE)
    assert one.event_id != two.event_id
    assert before <= one.occurred_at <= datetime.now(UTC)
    assert one.total_tokens == 7


def test_to_charge_keeps_given_values_and_rejects_bad_ones() -> None:
    given_ = to_charge({**BASE, "event_id": "e-1", "occurred_at": "2026-11-23T10:00:00+01:00"})
    assert given_.event_id == "e-1" and given_.occurred_at.utcoffset() == timedelta(hours=1)
    with pytest.raises(ValidationError):
        to_charge({**BASE, "total_tokens": 8})
    with pytest.raises(ValueError, match="future"):
        to_charge(
            {**BASE, "occurred_at": datetime.now(UTC) + timedelta(hours=1)},
            max_clock_skew=timedelta(minutes=5),
        )


def test_profile_resolver() -> None:
    fields = {k: v for k, v in BASE.items() if k not in ("account_id", "user_id")}
    with pytest.raises(ValueError, match="set_profile_resolver"):
        to_charge({**fields, "user_profile_id": 42})
    set_profile_resolver(lambda profile: (f"acct-{profile}", f"user-{profile}"))
    try:
        charge = to_charge({**fields, "user_profile_id": 42})
        assert (charge.account_id, charge.user_id, charge.user_profile_id) == ("acct-42", "user-42", 42)
    finally:
        set_profile_resolver(None)


async def test_create_charge_refuses_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="acreate_charge"):
        create_charge(**BASE)


# --- ChargeProducer against a fake aiokafka producer ----------------------------------------


class Meta(NamedTuple):
    topic: str
    partition: int
    offset: int


class FakeKafka:
    """Stands in for AIOKafkaProducer: acks on the next loop turn, or fails `fail` times first."""

    def __init__(
        self, fail: int = 0, error: type[Exception] = KafkaConnectionError, start_fails: bool = False
    ) -> None:
        self.fail, self.error, self.start_fails = fail, error, start_fails
        self.records: list[tuple[bytes, bytes]] = []
        self.attempts = 0
        self.options: dict[str, Any] = {}

    def __call__(self, **options: Any) -> FakeKafka:
        self.options = options
        return self

    async def start(self) -> None:
        if self.start_fails:
            raise KafkaConnectionError("Unable to bootstrap")

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Meta]:
        self.attempts += 1
        future: asyncio.Future[Meta] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            asyncio.get_running_loop().call_soon(future.set_exception, self.error())
        else:
            self.records.append((key, value))
            future.set_result(Meta(topic, 0, len(self.records) - 1))
        return future


def producer(fake: FakeKafka, **options: Any) -> ChargeProducer:
    defaults: dict[str, Any] = {"retry_backoff_ms": 1, "linger_ms": 20}
    return ChargeProducer(SETTINGS, client_factory=fake, **(defaults | options))


async def test_producer_batches_per_account_within_limits() -> None:
    fake = FakeKafka()
    sent = charges(2500, accounts=5)
    async with producer(fake, max_charges=300) as p:
        futures = [await p.send(c) for c in sent]
    assert all(f.done() and f.exception() is None for f in futures)
    assert Counter(c.event_id for c in decoded(fake.records)) == Counter(c.event_id for c in sent)
    assert all(len(json.loads(v)) <= 300 for _, v in fake.records)
    assert len(fake.records) < 30
    assert (p.delivered_charges, p.delivered_records) == (2500, len(fake.records))
    assert fake.options["acks"] == "all" and fake.options["enable_idempotence"] is False  # loopback


async def test_send_refuses_a_charge_too_far_in_the_future_though_the_clock_is_cached() -> None:
    async with producer(FakeKafka()) as p:
        skew = SETTINGS.max_clock_skew
        await p.send(to_charge(BASE | {"occurred_at": datetime.now(UTC)}))
        with pytest.raises(ValueError, match="in the future"):
            await p.send(to_charge(BASE | {"occurred_at": datetime.now(UTC) + skew * 2}))
        p._within_skew.horizon -= timedelta(hours=1)  # an old horizon: the clock is read again
        await p.send(to_charge(BASE | {"occurred_at": datetime.now(UTC) + skew / 2}))


async def test_linger_sends_without_flush() -> None:
    fake = FakeKafka()
    async with producer(fake, linger_ms=10) as p:
        future = await p.send(charges(1)[0])
        meta = await asyncio.wait_for(future, 2)
        assert meta.offset == 0 and len(fake.records) == 1


async def test_unbatched_sends_one_object_per_record() -> None:
    fake = FakeKafka()
    sent = charges(40)
    async with producer(fake, batch=False) as p:
        for c in sent:
            await p.send(c)
    assert len(fake.records) == 40
    assert all(isinstance(json.loads(v), dict) for _, v in fake.records)
    assert [c.event_id for c in decoded(fake.records)] == [c.event_id for c in sent]


async def test_transient_errors_are_retried() -> None:
    fake = FakeKafka(fail=3, error=KafkaTimeoutError)
    async with producer(fake, retries=5) as p:
        meta = await p.send_and_wait(BASE)
    assert meta.offset == 0 and fake.attempts == 4


async def test_exhausted_retries_raise_from_flush_and_the_future() -> None:
    fake = FakeKafka(fail=100)
    p = producer(fake, retries=3)
    await p.start()
    future = await p.send(BASE)
    with pytest.raises(DeliveryError) as info:
        await p.flush()
    assert fake.attempts == 3
    assert len(info.value.failures) == 1 and info.value.failures[0].charges == 1
    assert json.loads(info.value.failures[0].value)[0]["account_id"] == "a1"
    assert isinstance(future.exception(), DeliveryError)
    await p.close()  # the failure was reported once; closing does not repeat it


async def test_non_retriable_error_fails_at_once_and_leaving_the_block_raises() -> None:
    fake = FakeKafka(fail=1, error=MessageSizeTooLargeError)
    with pytest.raises(DeliveryError, match="1 charges in 1 records"):
        async with producer(fake, retries=5) as p:
            await p.send(BASE)
    assert fake.attempts == 1


async def test_a_failure_is_noted_on_the_bodys_exception() -> None:
    fake = FakeKafka(fail=100)
    with pytest.raises(ZeroDivisionError) as info:
        async with producer(fake, retries=2) as p:
            await p.send(BASE)
            1 / 0  # noqa: B018
    assert any("not delivered" in note for note in info.value.__notes__)


async def test_unreachable_broker_raises_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1 \(2 attempts\)"):
        async with producer(FakeKafka(start_fails=True), retries=2):
            pass


async def test_send_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await producer(FakeKafka()).send(BASE)


class SlowKafka(FakeKafka):
    """Accepts a record only once `gate` is open and a loop turn has passed, like aiokafka's
    `send()` waiting for its batch to drain; counts how many sends wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = self.most_waiting = 0

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Meta]:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
        finally:
            self.waiting -= 1
        return await super().send(topic, value, key)


async def test_send_pushes_back_when_too_much_waits_to_be_sent() -> None:
    fake = SlowKafka()
    sent = charges(1000, accounts=1000)  # one charge per account: no record ever fills up
    async with producer(fake, linger_ms=1, max_buffered_charges=50) as p:
        accepted = 0

        async def burst() -> None:
            nonlocal accepted
            for c in sent:
                await p.send(c)
                accepted += 1

        task = asyncio.create_task(burst())
        try:
            for _ in range(20 * len(sent)):  # loop turns, not seconds: the same on a busy machine
                await asyncio.sleep(0)
            assert not task.done(), "send() kept accepting charges the broker did not take"
            assert 0 < accepted <= 50  # max_buffered_charges
        finally:
            fake.gate.set()  # else leaving the block waits for deliveries forever
        await asyncio.wait_for(task, 10)
    assert Counter(c.event_id for c in decoded(fake.records)) == Counter(c.event_id for c in sent)


async def test_lingered_records_are_sent_one_at_a_time_not_as_a_task_each() -> None:
    fake = SlowKafka()
    fake.gate.set()
    sent = charges(3000, accounts=3000)
    async with producer(fake, linger_ms=0) as p:
        for i, c in enumerate(sent):
            await p.send(c)
            if i % 100 == 0:
                await asyncio.sleep(0.001)  # let lingers pass while the caller is busy
    assert fake.most_waiting <= 2  # the sweeper and the caller, never a queue that times out
    assert Counter(c.event_id for c in decoded(fake.records)) == Counter(c.event_id for c in sent)


def test_litellm_response_cost_in_whole_nano_units() -> None:
    reported_nanos = pytest.importorskip("streams.producer.litellm_callback").reported_nanos
    assert reported_nanos(0.000123) == 123_000
    assert reported_nanos(1.5e-9) == 2  # half to even
    assert reported_nanos(2.5e-9) == 2
    assert reported_nanos(0) == 0
    for bad in (None, -0.01, float("nan"), float("inf"), True, "0.1", 10.0**7):
        assert reported_nanos(bad) is None, bad
