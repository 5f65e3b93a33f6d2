"""`billing dlq` against a real broker, a real Postgres and a real worker.

What must hold: counts per reason are exact (a DLQ record written twice counts once), `show`
gives back the original payload with its coordinates, and a redrive never creates a duplicate:
not for a charge that already counted, not when the same record is re-driven twice after the
rule that refused it (BILLING_MAX_CLOCK_SKEW) was relaxed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import Result

from streams.charge import dead_letter as envelope
from streams.cli.dlq import dlq
from streams.kafka.topics import ensure_topics
from tests.api_support import billing_cli
from tests.integration.test_safe_cli import billing
from tests.support import (
    WorkerProcess,
    charge_dict,
    encode_batch,
    fetch_rows,
    free_port,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration
ZONE = ZoneInfo("UTC")


async def billing_dlq(env: dict[str, str], *args: str) -> Result:
    """`billing dlq ARGS` in-process with `env` as the whole BILLING_* configuration."""
    return await billing_cli(env, dlq, *args)


async def counts(env: dict[str, str]) -> dict[str, Any]:
    result = await billing_dlq(env, "list", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def redrive(env: dict[str, str], *args: str) -> str:
    result = await billing_dlq(env, "redrive", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def send(env: dict[str, str], charges: list[dict[str, Any]]) -> None:
    """One record per charge, keyed by account."""
    records = [(c["account_id"].encode(), encode_batch([c]), None) for c in charges]
    await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)


async def wait_for_rows(database: str, charges: list[dict[str, Any]], worker: WorkerProcess) -> None:
    """Wait until the `charges`' rows are exact. A sentinel charge sent after a redrive on the
    same key (so the same partition) proves the worker has processed the redriven record too."""
    expected = ground_truth(charges, ZONE)

    async def exact() -> bool:
        return not mismatches(expected, await fetch_rows(database, {k[0] for k in expected}))

    try:
        await wait_until(exact, 45, "exact rows")
    except AssertionError:
        problems = mismatches(expected, await fetch_rows(database, {k[0] for k in expected}))
        raise AssertionError(f"rows differ from ground truth: {problems}\n{worker.log_tail()}") from None


async def test_list_show_and_redrive_without_duplicates(broker: str, database: str, tmp_path: Path) -> None:
    env = pipeline_env(broker, database, tmp_path / "data")
    await ensure_topics(settings_from(env))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        now = datetime.now(UTC)
        good = [charge_dict("acct-a", "u1", "openai", "completion", now, 10 * i, i) for i in (1, 2, 3)]
        bad_element = charge_dict("acct-a", "u1", "openai", "completion", now, -1, 1)
        mismatch = charge_dict("acct-a", "u1", "openai", "completion", now, 1, 1, total_tokens=5)
        future = charge_dict("acct-f", "u1", "anthropic", "tool", now + timedelta(minutes=10), 3, 4)
        counted = charge_dict("acct-d", "u1", "openai", "completion", now, 7, 7)
        keyless = charge_dict("acct-k", "u1", "openai", "plugin", now, 5, 6)
        batch = json.dumps([good[1], bad_element, good[2]]).encode()
        mismatch_bytes = encode_batch([mismatch])
        await produce_raw(
            broker,
            env["BILLING_CHARGES_TOPIC"],
            [
                (b"acct-a", encode_batch([good[0]]), None),
                (b"acct-a", batch, None),
                (b"acct-a", b"{not json", None),
                (b"acct-a", mismatch_bytes, None),
                (b"acct-f", encode_batch([future]), None),
                (b"acct-d", encode_batch([counted]), None),
                (None, encode_batch([keyless]), None),
            ],
        )
        counted_so_far = [*good, counted]
        await wait_for_rows(database, counted_so_far, worker)
        reasons = {
            "future_timestamp": 1,
            "invalid_json": 1,
            "missing_key": 1,
            "negative_count": 1,
            "total_mismatch": 1,
        }

        async def all_refused() -> bool:
            return (await counts(env))["by_reason"] == reasons

        await wait_until(all_refused, 30, "five DLQ records", interval=0.2, on_timeout=worker.log_tail)

        table = await billing_dlq(env, "list")
        assert table.exit_code == 0 and "total_mismatch" in table.stdout and "negative_count" in table.stdout

        shown = await billing_dlq(env, "show", "--reason", "total_mismatch", "--format", "jsonl")
        assert shown.exit_code == 0, shown.output
        [line] = shown.stdout.splitlines()
        record = json.loads(line)
        assert record["payload"] == mismatch_bytes.decode() and record["reason"] == "total_mismatch"
        assert record["topic"] == env["BILLING_CHARGES_TOPIC"] and record["key"] == "acct-a"
        assert record["partition"] >= 0 and record["offset"] >= 0 and record["index"] is None

        shown = await billing_dlq(env, "show", "--reason", "negative_count", "--format", "jsonl")
        element = json.loads(shown.stdout)
        assert element["index"] == 1 and json.loads(element["payload"]) == bad_element

        shown = await billing_dlq(env, "show", "--reason", "invalid_json", "--payload-only")
        assert shown.stdout == "{not json\n"
        shown = await billing_dlq(env, "show")
        assert shown.exit_code == 0 and "acct-a" in shown.stdout

        # An already counted charge in the DLQ, written twice (the worker is at-least-once).
        letter = envelope.make_dead_letter(
            reason="too_late",
            detail="written by the test",
            topic=env["BILLING_CHARGES_TOPIC"],
            partition=0,
            offset=1_000_000,
            index=None,
            key=b"acct-d",
            payload=encode_batch([counted]),
        )
        copy = (b"acct-d", envelope.encode(letter), None)
        await produce_raw(broker, env["BILLING_DLQ_TOPIC"], [copy, copy])
        listed = await counts(env)
        assert listed["by_reason"] == {**reasons, "too_late": 1} and listed["duplicates"] == 1

        dry = await redrive(env, "--reason", "too_late", "--reason", "missing_key", "--dry-run")
        assert "would redrive 2 of 2" in dry
        out = await redrive(env, "--reason", "too_late", "--reason", "missing_key")
        assert "redrove 2 of 2" in out and "duplicate copies ignored: 1" in out
        sentinels = [charge_dict(a, "sentinel", "openai", "tool", now, 1, 1) for a in ("acct-d", "acct-k")]
        await send(env, sentinels)
        counted_so_far += [keyless, *sentinels]
        await wait_for_rows(database, counted_so_far, worker)  # acct-d still counted once

        # Lift the clock-skew rule for the future charge: it counts once; a second redrive of the
        # same letter is refused (it could bill twice once the dedup horizon has passed).
        assert "redrove 1 of 1" in await redrive(
            env, "--reason", "future_timestamp", "--waive", "future_timestamp"
        )
        again = await billing_dlq(env, "redrive", "--reason", "future_timestamp")
        assert "redrove 0 of 1" in again.output and "already redriven" in again.output
        states = await counts(env)
        assert states["by_state"]["redriven"] == 3
        sentinel = charge_dict("acct-f", "sentinel", "openai", "tool", now, 1, 1)
        await send(env, [sentinel])
        counted_so_far += [future, sentinel]
        await wait_for_rows(database, counted_so_far, worker)
        rows = await fetch_rows(database, ["acct-f"])
        assert rows[("acct-f", "u1", "anthropic", future_day(future), "tool")]["charge_count"] == 1
        assert (await counts(env))["by_reason"] == {**reasons, "too_late": 1}  # nothing refused again
    finally:
        worker.stop()


def future_day(charge: dict[str, Any]) -> Any:
    return datetime.fromisoformat(charge["occurred_at"]).astimezone(ZONE).date()


async def test_errors_are_one_line(broker: str, database: str, tmp_path: Path) -> None:
    env = pipeline_env(broker, database, tmp_path / "data")

    missing = await billing_dlq(env, "list")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        assert env["BILLING_DLQ_TOPIC"] not in await admin.list_topics()  # not auto-created
    finally:
        await admin.close()

    away = await billing_dlq({**env, "BILLING_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, "show")
    assert away.exit_code == 4 and away.output.startswith("Error: no Kafka broker answers at 127.0.0.1:")
    assert "billing dev up" in away.output
    assert len(away.output.strip().splitlines()) == 1

    unselected = await billing_dlq(env, "redrive")
    assert unselected.exit_code == 2 and "--all" in unselected.output

    # No key and no account_id to take one from: skipped, reported, exit status 1.
    await ensure_topics(settings_from(env))
    letter = envelope.make_dead_letter(
        reason="missing_key",
        detail="test",
        topic=env["BILLING_CHARGES_TOPIC"],
        partition=0,
        offset=0,
        index=None,
        key=None,
        payload=b"\xff not json",
    )
    await produce_raw(broker, env["BILLING_DLQ_TOPIC"], [(None, envelope.encode(letter), None)])
    skipped = await billing_dlq(env, "redrive", "--all")
    assert skipped.exit_code == 1 and "redrove 0 of 1" in skipped.output and "skipped" in skipped.output
    shown = await billing_dlq(env, "show", "--format", "jsonl")
    assert json.loads(shown.stdout)["payload_b64"] == "/yBub3QganNvbg=="


async def test_a_redrive_never_bills_twice_and_a_waived_rule_survives_replay_and_rebuild(
    broker: str, database: str, tmp_path: Path
) -> None:
    env = pipeline_env(broker, database, tmp_path / "data", grace="1s", late_horizon="1d")
    topic = env["BILLING_CHARGES_TOPIC"]
    await ensure_topics(settings_from(env))
    now = datetime.now(UTC)
    on_time = [charge_dict("acct-w", "u", "openai", "completion", now - timedelta(days=1), 5, 5)]
    await send(env, on_time)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        await wait_for_rows(database, on_time, worker)

        async def yesterday_closed() -> bool:
            return all(r["finalized_at"] is not None for r in (await fetch_rows(database)).values())

        await wait_until(yesterday_closed, 60, "yesterday closed", on_timeout=worker.log_tail)
        ancient = charge_dict("acct-w", "u", "openai", "completion", now - timedelta(days=3), 7, 7)
        await send(env, [ancient])
        await wait_until(lambda: _reasons_are(env, {"too_late": 1}), 60, "the too_late letter")
        assert "redrove 1 of 1" in await redrive(env, "--reason", "too_late", "--waive", "too_late")
        await wait_for_rows(database, [*on_time, ancient], worker)
        again = await billing_dlq(env, "redrive", "--reason", "too_late", "--waive", "too_late")
        assert "redrove 0 of 1" in again.output and "already redriven" in again.output

        # A letter refused longer ago than the dedup horizon is never sent again: its charge may
        # have counted since (here it did), and the ledger may have forgotten it.
        stale = envelope.make_dead_letter(
            reason="future_timestamp",
            detail="test",
            topic=topic,
            partition=0,
            offset=999_999,
            index=None,
            key=b"acct-w",
            payload=encode_batch(on_time),
            now=now - timedelta(days=30),
        )
        await produce_raw(broker, env["BILLING_DLQ_TOPIC"], [(b"acct-w", envelope.encode(stale), None)])
        refused = await billing_dlq(env, "redrive", "--reason", "future_timestamp")
        assert "redrove 0 of 1" in refused.output and "BILLING_DEDUP_HORIZON" in refused.output
    finally:
        worker.stop()
    truth = ground_truth([*on_time, ancient], ZONE)
    day_from, day_to = (now - timedelta(days=3)).date().isoformat(), now.date().isoformat()
    rebuilt = await asyncio.to_thread(
        billing, env, "rebuild", "--from", day_from, "--to", day_to, "--no-progress"
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert not mismatches(truth, await fetch_rows(database))  # the waived charge stays accepted
    replayed = await asyncio.to_thread(billing, env, "replay", "--to-offsets", "all:earliest")
    assert replayed.returncode == 0, replayed.stderr
    sentinel = charge_dict("acct-s", "u", "openai", "completion", now, 1, 1)
    await send(env, [sentinel])
    worker = WorkerProcess(env, tmp_path / "worker2.log").start()
    try:
        await wait_for_rows(database, [*on_time, ancient, sentinel], worker)
    finally:
        worker.stop()


async def _reasons_are(env: dict[str, str], wanted: dict[str, int]) -> bool:
    result = await billing_dlq(env, "list", "--format", "json")
    return result.exit_code == 0 and json.loads(result.stdout)["by_reason"] == wanted
