"""The sink's transaction against a real Postgres, without Kafka: fences, dedup, lateness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from schemas.charge import Charge
from streams.aggregate import Batch
from streams.config import Settings
from streams.sink import PostgresSink

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def charge(event_id: str, prompt: int = 10, when: datetime = NOW, account: str = "acct") -> Charge:
    return Charge(
        event_id=event_id,
        occurred_at=when,
        account_id=account,
        user_id="u",
        provider="openai",
        charge_type="completion",
        prompt_tokens=prompt,
        completion_tokens=1,
    )


def batch(settings: Settings, *records: tuple[int, list[Charge]], partition: int = 0) -> Batch:
    out = Batch(settings.zone)
    for offset, charges in records:
        out.add_record(partition, offset, charges)
    return out


async def row(url: str, account: str = "acct") -> asyncpg.Record:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchrow("SELECT * FROM daily_billing_records WHERE account_id = $1", account)
    finally:
        await conn.close()


@pytest.fixture
async def sink(database):
    settings = Settings(_env_file=None, database_url=database)
    instance = PostgresSink(settings)
    await instance.start()
    yield instance, settings, database
    await instance.stop()


async def test_replayed_batch_changes_nothing(sink):
    s, settings, url = sink
    first = batch(settings, (3, [charge("a", 10), charge("b", 20)]), (4, [charge("c", 30)]))
    result = await s.flush(first)
    assert result.charges == 3 and result.duplicates == 0
    before = await row(url)
    assert (before["charge_count"], before["prompt_tokens"], before["last_offset"]) == (3, 60, 4)
    await s.flush(first)  # a crash before the offset commit: the same records again
    await s.flush(batch(settings, (4, [charge("c", 30)]), (5, [charge("d", 1)])))  # overlapping
    after = await row(url)
    assert (after["charge_count"], after["prompt_tokens"], after["last_offset"]) == (4, 61, 5)


async def test_resend_is_a_duplicate_and_still_moves_the_fence(sink):
    s, settings, url = sink
    await s.flush(batch(settings, (5, [charge("x", 10)])))
    counted = await row(url)
    result = await s.flush(batch(settings, (9, [charge("x", 10)])))
    assert result.duplicates == 1
    after = await row(url)
    assert after["charge_count"] == 1 and after["prompt_tokens"] == 10
    assert after["last_offset"] == 9 and after["updated_at"] == counted["updated_at"]
    # Long after the dedup horizon purged the key, a replay from between the copies counts nothing.
    conn = await asyncpg.connect(url)
    await conn.execute("DELETE FROM billing_seen_events")
    await conn.close()
    await s.flush(batch(settings, (9, [charge("x", 10)])))
    assert (await row(url))["charge_count"] == 1


async def test_two_copies_in_one_record_count_once(sink):
    s, settings, url = sink
    result = await s.flush(batch(settings, (0, [charge("y", 5), charge("y", 5), charge("z", 7)])))
    assert result.duplicates == 1
    assert (await row(url))["charge_count"] == 2


async def test_deleted_row_comes_back_on_replay(sink):
    s, settings, url = sink
    records = batch(settings, (1, [charge("p", 4)]), (2, [charge("q", 6)]))
    await s.flush(records)
    conn = await asyncpg.connect(url)
    await conn.execute("DELETE FROM daily_billing_records")
    await conn.close()
    await s.flush(records)
    restored = await row(url)
    assert (restored["charge_count"], restored["prompt_tokens"]) == (2, 10)


async def test_charge_for_a_closed_day_revises_the_final_row(sink):
    s, settings, url = sink
    two_days_ago = NOW - timedelta(days=2)
    await s.flush(batch(settings, (0, [charge("old-1", 10, two_days_ago)])))
    closed = await s.close_days()
    assert closed is not None and closed >= two_days_ago.date()
    final = await row(url)
    assert final["finalized_at"] is not None and final["revision"] == 0
    await s.flush(batch(settings, (1, [charge("old-2", 5, two_days_ago)])))
    revised = await row(url)
    assert (revised["charge_count"], revised["late_charge_count"], revised["revision"]) == (2, 1, 1)
    assert revised["finalized_at"] == final["finalized_at"] and revised["updated_at"] > final["updated_at"]
    # The same late record replayed: still one late charge (the verdict is reproducible).
    await s.flush(batch(settings, (1, [charge("old-2", 5, two_days_ago)])))
    again = await row(url)
    assert (again["charge_count"], again["late_charge_count"], again["revision"]) == (2, 1, 1)
