"""Arbitrary records, keys and partitions against the real worker and the real Postgres.

Hypothesis produces records of every kind (valid single charges and batches, copies of one
idempotency key on other partitions, hostile but valid identifiers, garbage bytes, invalid
charges, control characters), each on a partition of its choosing, while one worker meters
them. After each example: the worker still runs, every valid charge counts exactly once in the
rows (ground truth by plain arithmetic), and every refused record is in the DLQ with a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.charge.dead_letter import decode as decode_letter
from streams.kafka.topics import ensure_topics
from tests.support import (
    WorkerProcess,
    fetch_rows,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
ACCOUNTS = ["acme", "é€ 漢字", "[/bold]", "=cmd|' /C calc'!A0", "a" * 110, "o'brien; drop"]
EVENT_IDS = [f"e{i}" for i in range(6)]


def content(account: str, event_id: str) -> dict[str, Any]:
    """One idempotency key always carries the same charge: which copy counts cannot matter."""
    h = int.from_bytes(hashlib.sha256(f"{account}/{event_id}".encode()).digest()[:4], "big")
    return {
        "event_id": event_id,
        "occurred_at": (NOW - timedelta(minutes=h % 600)).isoformat(),
        "account_id": account,
        "user_id": f"u{h % 3}",
        "provider": ("openai", "anthropic")[h % 2],
        "charge_type": "completion",
        "prompt_tokens": h % 1000,
        "completion_tokens": h % 77,
    }


@st.composite
def records(draw: st.DrawFn, tag: str) -> tuple[bytes | None, bytes, int, list[dict[str, Any]]]:
    """(key, value, partition, the valid charges it holds: [] for a record to refuse)."""
    partition = draw(st.integers(0, 7))
    account = tag + draw(st.sampled_from(ACCOUNTS))
    kind = draw(st.sampled_from(["single", "batch", "garbage", "negative", "control", "mismatch"]))
    if kind in ("single", "batch"):
        ids = draw(st.lists(st.sampled_from(EVENT_IDS), min_size=1, max_size=1 if kind == "single" else 3))
        charges = [content(account, i) for i in ids]
        value = json.dumps(charges[0] if kind == "single" else charges, ensure_ascii=draw(st.booleans()))
        return account.encode(), value.encode(), partition, charges
    if kind == "garbage":
        return draw(st.one_of(st.none(), st.binary(max_size=8))), draw(st.binary(max_size=64)), partition, []
    bad = content(account, draw(st.sampled_from(EVENT_IDS)))
    if kind == "negative":
        bad["prompt_tokens"] = -1
    elif kind == "control":
        bad[draw(st.sampled_from(["event_id", "user_id"]))] = "x" + draw(
            st.sampled_from(["\u0000", "\u001b", "\u007f"])
        )
    else:
        bad["account_id"] = account + "-other"
    return account.encode(), json.dumps(bad).encode(), partition, []


class DeadLetters:
    """Every letter of the DLQ topic so far, read incrementally by one consumer."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.letters: list[Any] = []
        self.consumer: AIOKafkaConsumer | None = None

    async def read(self) -> list[Any]:
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.env["BILLING_KAFKA_BOOTSTRAP"], enable_auto_commit=False
            )
            await self.consumer.start()
            topic = self.env["BILLING_DLQ_TOPIC"]
            parts = [TopicPartition(topic, p) for p in range(8)]
            self.consumer.assign(parts)
            await self.consumer.seek_to_beginning(*parts)
        fetched = await self.consumer.getmany(timeout_ms=300)
        self.letters += [decode_letter(r.value) for records in fetched.values() for r in records]
        return self.letters

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def test_arbitrary_records_end_counted_exactly_once_or_in_the_dlq(
    broker: str, database: str, tmp_path: Path
) -> None:
    env = pipeline_env(broker, database, tmp_path / "data")
    loop = asyncio.new_event_loop()  # one loop for the whole run: the DLQ reader lives across examples
    loop.run_until_complete(ensure_topics(settings_from(env)))
    topic = env["BILLING_CHARGES_TOPIC"]
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    dead = DeadLetters(env)
    examples = count()
    produced: list[dict[str, Any]] = []
    refused: set[tuple[int, int]] = set()

    # No shrinking: each step would run against the live worker; the failure message says what differs.
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        tag = f"x{next(examples)}-"
        batch = data.draw(st.lists(records(tag), min_size=1, max_size=12))
        metas = loop.run_until_complete(produce_raw(broker, topic, [(k, v, p) for k, v, p, _ in batch]))
        for (_, _, _, charges), meta in zip(batch, metas, strict=True):
            if charges:
                produced.extend(charges)
            else:
                refused.add((meta.partition, meta.offset))
        expected = ground_truth(produced, ZoneInfo("UTC"))
        problems: list[str] = []

        async def settled() -> bool:
            rows = await fetch_rows(database)
            letters = {(x.partition, x.offset) for x in await dead.read()}
            problems[:] = [
                *mismatches(expected, rows)[:10],
                *(f"no letter for {c}" for c in sorted(refused - letters)),
            ]
            return not problems

        def explain() -> str:
            return "\n".join([*problems, worker.log_tail(15)])

        loop.run_until_complete(
            wait_until(settled, 90, "every record counted or dead-lettered", on_timeout=explain)
        )
        assert worker.alive, worker.log_tail()

    try:
        example()
        letters = loop.run_until_complete(dead.read())
        assert all(x.reason for x in letters)
        assert {(x.partition, x.offset) for x in letters} == refused  # no valid record refused
    finally:
        worker.stop()
        loop.run_until_complete(dead.stop())
        loop.close()
