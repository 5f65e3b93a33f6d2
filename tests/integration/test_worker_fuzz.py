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
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.dlq import decode as decode_letter
from streams.embedded_broker import ensure_topics
from tests.integration.test_pipeline import read_dlq
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


def test_arbitrary_records_end_counted_exactly_once_or_in_the_dlq(
    broker: str, database: str, tmp_path: Path
) -> None:
    env = pipeline_env(broker, database, tmp_path / "data")
    asyncio.run(ensure_topics(settings_from(env)))
    topic = env["BILLING_CHARGES_TOPIC"]
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    examples = count()
    produced: list[dict[str, Any]] = []
    refused: set[tuple[int, int]] = set()

    # No shrinking: each step would run against the live worker; the failure message says what differs.
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        tag = f"x{next(examples)}-"
        batch = data.draw(st.lists(records(tag), min_size=1, max_size=12))
        metas = asyncio.run(produce_raw(broker, topic, [(k, v, p) for k, v, p, _ in batch]))
        for (_, _, _, charges), meta in zip(batch, metas, strict=True):
            if charges:
                produced.extend(charges)
            else:
                refused.add((meta.partition, meta.offset))
        expected = ground_truth(produced, ZoneInfo("UTC"))

        async def settled() -> bool:
            rows = await fetch_rows(database)
            letters = {
                (x.partition, x.offset) for x in map(decode_letter, await read_dlq(env, len(refused), 5))
            }
            return not mismatches(expected, rows) and refused <= letters

        asyncio.run(
            wait_until(settled, 90, "every record counted or dead-lettered", on_timeout=worker.log_tail)
        )
        assert worker.alive, worker.log_tail()

    try:
        example()
        letters = [decode_letter(v) for v in asyncio.run(read_dlq(env, len(refused), 10))]
        assert all(x.reason for x in letters)
        assert {(x.partition, x.offset) for x in letters} == refused  # no valid record refused
    finally:
        worker.stop()
