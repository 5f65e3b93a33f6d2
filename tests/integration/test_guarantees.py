"""The guarantees the README promises, each with a test that fails when the guarantee breaks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from streams.kafka.topics import ensure_topics
from streams.ops.replay import rewind_group
from tests.integration.test_pipeline import read_dlq, rows_match
from tests.support import (
    WorkerProcess,
    charge_dict,
    encode_batch,
    fetch_rows,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
UTC = UTC


def _charges(account: str, n: int, when: datetime, start: int = 0) -> list[dict]:
    return [
        charge_dict(account, f"u{i % 3}", ("openai", "anthropic")[i % 2], "completion", when, 10 + i, 5 + i)
        for i in range(start, start + n)
    ]


def _records(charges: list[dict], per_record: int) -> list[tuple[bytes, bytes, None]]:
    """Batch records of one account each (the producer's layout), `per_record` charges each."""
    by_account: dict[str, list[dict]] = {}
    for charge in charges:
        by_account.setdefault(charge["account_id"], []).append(charge)
    out = []
    for account, own in by_account.items():
        for i in range(0, len(own), per_record):
            out.append((account.encode(), json.dumps(own[i : i + per_record]).encode(), None))
    return out


@pytest.mark.parametrize(
    "point", ["after_flush_before_ack", "inside_flush_transaction", "after_dlq_before_flush"]
)
async def test_sigkill_at_crash_point_leaves_totals_exact(broker, database, tmp_path: Path, point: str):
    """Kill the worker exactly between the Postgres commit and the offset ack (and elsewhere)."""
    env = pipeline_env(broker, database, tmp_path / "data")
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    first = _charges("crash-a", 40, now) + _charges("crash-b", 40, now)
    second = _charges("crash-a", 40, now, start=100) + _charges("crash-b", 40, now, start=100)
    bootstrap, topic = env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"]
    await produce_raw(bootstrap, topic, _records(first, 7))
    await produce_raw(bootstrap, topic, [(b"crash-a", b"{broken", None)])  # reaches the DLQ path

    doomed = WorkerProcess(env, tmp_path / "doomed.log", {"BILLING_CRASH_POINT": point}).start()
    try:
        doomed.proc.wait(90)  # type: ignore[union-attr]
    finally:
        doomed.kill()
    assert doomed.proc.returncode == -9, doomed.log_tail()  # type: ignore[union-attr]
    assert f"crash point {point} reached" in doomed.log_path.read_text()

    await produce_raw(bootstrap, topic, _records(second, 5))
    survivor = WorkerProcess(env, tmp_path / "survivor.log").start()
    try:
        expected = ground_truth(first + second, ZoneInfo("UTC"))
        await wait_until(
            lambda: rows_match(database, expected), 90, "exact totals", on_timeout=survivor.log_tail
        )
        letters = await read_dlq(env, expected_count=1)
        assert {json.loads(v)["reason"] for v in letters} == {"invalid_json"}
    finally:
        survivor.stop()


async def test_a_commit_past_the_fence_does_not_skip_charges(broker, database, tmp_path: Path):
    """The group's committed offset is only a hint: one past what Postgres applied (a commit
    of records whose flush never happened, as a revoked worker or a broker without generation
    checks can leave) must not make the worker skip the charges in between."""
    env = pipeline_env(broker, database, tmp_path / "data")
    settings = settings_from(env)
    await ensure_topics(settings)
    charges = _charges("ahead", 12, datetime.now(UTC))
    records = [(b"ahead", json.dumps(c).encode(), 0) for c in charges]  # all on partition 0
    await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)
    await rewind_group(settings, {0: 8}, force=False, note="ahead of the fence")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        expected = ground_truth(charges, ZoneInfo("UTC"))
        await wait_until(
            lambda: rows_match(database, expected), 60, "all 12 charges", on_timeout=worker.log_tail
        )
        assert "partition 0 of" in worker.log_path.read_text()
        assert "would resume at offset 8, past 0" in worker.log_path.read_text()
    finally:
        worker.stop()


async def test_resent_event_counts_once_across_records_and_inside_one(broker, database, tmp_path: Path):
    env = pipeline_env(broker, database, tmp_path / "data")
    await ensure_topics(settings_from(env))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        now = datetime.now(UTC)
        original = _charges("dedup", 6, now)
        records = _records(original, 3)
        records.append((b"dedup", json.dumps([original[0], original[0], original[4]]).encode(), None))
        records.append((b"dedup", json.dumps(original[1]).encode(), None))  # re-sent alone
        await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)
        expected = ground_truth(original, ZoneInfo("UTC"))
        await wait_until(
            lambda: rows_match(database, expected), 60, "deduplicated totals", on_timeout=worker.log_tail
        )
        conn = await asyncpg.connect(database)
        try:
            progress = await conn.fetchval(
                "SELECT sum(applied_offset + 1) FROM billing_partitions WHERE topic = $1",
                env["BILLING_CHARGES_TOPIC"],
            )
            assert progress >= len(records)  # the duplicate records were read, not skipped unread
            total = await conn.fetchval("SELECT sum(charge_count) FROM daily_billing_records")
        finally:
            await conn.close()
        assert total == len(original)
    finally:
        worker.stop()


async def test_late_charge_revises_final_row_and_too_late_goes_to_dlq(broker, database, tmp_path: Path):
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
    # Yesterday stays open until its end + grace = now + 20 s has passed and the worker has read
    # everything the topic held by then.
    grace = int((now - midnight).total_seconds()) + 20
    env = pipeline_env(broker, database, tmp_path / "data", grace=f"{grace}s")
    await ensure_topics(settings_from(env))
    bootstrap, topic = env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"]
    yesterday = now - timedelta(days=1)
    key = ("late", "u0", "openai", yesterday.date(), "completion")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        first = charge_dict("late", "u0", "openai", "completion", yesterday, 100, 50)
        await produce_raw(bootstrap, topic, [(b"late", encode_batch([first]), None)])
        await wait_until(lambda: _has(database, key), 60, "provisional row", on_timeout=worker.log_tail)
        row = (await fetch_rows(database))[key]
        assert row["finalized_at"] is None and row["revision"] == 0

        # A charge stamped ahead does not close the day early: only the end + grace does.
        ahead = charge_dict("late", "u0", "openai", "completion", now + timedelta(seconds=60), 1, 1)
        await produce_raw(bootstrap, topic, [(b"late", encode_batch([ahead]), None)])
        await wait_until(lambda: _final(database, key), 60, "yesterday final", on_timeout=worker.log_tail)
        final = (await fetch_rows(database))[key]

        late = charge_dict("late", "u0", "openai", "completion", yesterday, 7, 3)
        ancient = charge_dict("late", "u0", "openai", "completion", now - timedelta(days=40), 1, 1)
        await produce_raw(
            bootstrap,
            topic,
            [(b"late", encode_batch([late]), None), (b"late", encode_batch([ancient]), None)],
        )
        await wait_until(
            lambda: rows_match(database, ground_truth([first, ahead, late], ZoneInfo("UTC"))),
            60,
            "late charge applied",
            on_timeout=worker.log_tail,
        )
        revised = (await fetch_rows(database))[key]
        assert revised["charge_count"] == 2 and revised["prompt_tokens"] == 107
        assert revised["late_charge_count"] == 1 and revised["revision"] == 1
        assert revised["finalized_at"] == final["finalized_at"]  # still final, not reopened
        assert revised["updated_at"] > final["updated_at"]
        letters = [json.loads(v) for v in await read_dlq(env, expected_count=1)]
        assert [letter["reason"] for letter in letters] == ["too_late"]
        assert json.loads(base64.b64decode(letters[0]["payload"])) == ancient
    finally:
        worker.stop()


async def _has(database: str, key: tuple) -> bool:
    return key in await fetch_rows(database)


async def _final(database: str, key: tuple) -> bool:
    row = (await fetch_rows(database)).get(key)
    return row is not None and row["finalized_at"] is not None


async def test_mismatches_helper_reports_differences():
    """The comparison every test relies on must itself be able to fail."""
    key = ("a", "u", "openai", datetime(2026, 1, 1).date(), "tool")
    expected = {key: {"prompt_tokens": 1, "charge_count": 1}}
    assert mismatches(expected, {}) == [f"missing row {key}"]
    assert mismatches(expected, {key: {"prompt_tokens": 2, "charge_count": 1}})
    assert not mismatches(expected, {key: {"prompt_tokens": 1, "charge_count": 1}})
