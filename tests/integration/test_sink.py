"""The sink's transaction against a real Postgres, without Kafka: fences per source, dedup per
account, lateness, too-late refusals, incarnations and values Postgres refuses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from schemas.charge import Charge
from streams.config.settings import Settings
from streams.errors import SinkDataError
from streams.rules.batch import Batch
from streams.rules.pending import PendingCharge
from streams.sink.postgres import PostgresSink
from streams.worker.closing import DayCloser, Observation

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


def batch(
    settings: Settings, *records: tuple[int, list[Charge]], partition: int = 0, first: str = "f0"
) -> Batch:
    out = Batch(settings.zone)
    for offset, charges in records:
        out.add_record(
            partition, offset, charges, fingerprint=first if offset == 0 else None, key=b"k", value=b"{}"
        )
    return out


def merged(*batches: Batch) -> Batch:
    out = Batch(batches[0].zone)
    for b in batches:
        out.rows += b.rows
        out.marks.update(b.marks)
        out.records.update(b.records)
    return out


async def rows(url: str, account: str = "acct") -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "SELECT * FROM daily_billing_records WHERE account_id = $1 ORDER BY date", account
        )
    finally:
        await conn.close()


async def row(url: str, account: str = "acct") -> asyncpg.Record:
    [only] = await rows(url, account)
    return only


async def close_through(sink: PostgresSink, day: date) -> None:
    """Close days as the closer does once every partition is read to its end."""
    closer = DayCloser(sink.settings, sink, ends=None)  # type: ignore[arg-type]
    _, _, _, sources = await sink.run(closer._standing)
    assert await sink.run(lambda conn: closer._close(conn, Observation(day, {}, sources)))


async def refuse_poison(url: str, column: str) -> None:
    """A trigger that makes Postgres refuse a row whose `column` is 'poison' (SQLSTATE 22023), as
    a value Postgres cannot take would: the test's stand-in for any data error of one record."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.{column} = 'poison' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
               END IF; RETURN NEW; END $$;
               CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON daily_billing_records
               FOR EACH ROW EXECUTE FUNCTION refuse_poison()"""
        )
    finally:
        await conn.close()


@pytest.fixture
async def sink(database):
    settings = Settings(_env_file=None, database_url=database)
    instance = PostgresSink(settings)
    await instance.start()
    yield instance, settings, database
    await instance.stop()


async def test_a_replayed_batch_changes_nothing(sink):
    s, settings, url = sink
    first = batch(settings, (3, [charge("a", 10), charge("b", 20)]), (4, [charge("c", 30)]))
    result = await s.flush(first)
    assert result.charges == 3 and result.duplicates == 0
    before = await row(url)
    await s.flush(first)  # a crash before the offset commit: the same records again
    await s.flush(batch(settings, (4, [charge("c", 30)]), (5, [charge("d", 1)])))  # overlapping
    after = await row(url)
    assert (after["charge_count"], after["prompt_tokens"]) == (4, 61)
    assert before["updated_at"] < after["updated_at"]


async def test_one_row_fed_by_three_partitions_counts_every_charge(sink):
    """What producers with different partitioners do: one account's charges on several partitions,
    with offsets that mean nothing across them (a small offset after a large one)."""
    s, settings, url = sink
    await s.flush(batch(settings, (5000, [charge("p0-a", 1)]), partition=0))
    await s.flush(batch(settings, (3, [charge("p1-a", 10)]), (7, [charge("p1-b", 100)]), partition=1))
    # one flush carrying the same row from two partitions
    await s.flush(
        merged(
            batch(settings, (4, [charge("p2-a", 1000)]), partition=2),
            batch(settings, (8, [charge("p1-c", 10000)]), partition=1),
        )
    )
    r = await row(url)
    assert (r["charge_count"], r["prompt_tokens"]) == (5, 11111)


async def test_a_resend_on_another_partition_is_a_duplicate(sink):
    s, settings, url = sink
    await s.flush(batch(settings, (5, [charge("x", 10)]), partition=0))
    result = await s.flush(batch(settings, (2, [charge("x", 10)]), partition=3))
    assert result.duplicates == 1
    assert (await row(url))["charge_count"] == 1


async def test_two_accounts_may_use_the_same_event_id(sink):
    s, settings, url = sink
    await s.flush(batch(settings, (1, [charge("req-42", 5, account="a")])))
    result = await s.flush(batch(settings, (2, [charge("req-42", 7, account="b")])))
    assert result.duplicates == 0
    assert (await row(url, "a"))["prompt_tokens"] == 5 and (await row(url, "b"))["prompt_tokens"] == 7


async def test_two_copies_in_one_record_count_once_and_a_record_twice_in_a_batch_once(sink):
    s, settings, url = sink
    result = await s.flush(batch(settings, (0, [charge("y", 5), charge("y", 5), charge("z", 7)])))
    assert result.duplicates == 1
    twice = Batch(settings.zone)
    for _ in range(2):  # a seek back delivered the record again within the same take
        twice.add_record(0, 1, [charge("w", 3)], key=b"k", value=b"{}")
    await s.flush(twice)
    r = await row(url)
    assert (r["charge_count"], r["prompt_tokens"]) == (3, 15)


async def test_a_restored_backup_gets_its_missing_charges_back_on_replay(sink):
    s, settings, url = sink
    records = [(1, [charge("p", 4)]), (2, [charge("q", 6)])]
    await s.flush(batch(settings, records[0]))
    conn = await asyncpg.connect(url)
    tables = ("daily_billing_records", "billing_partitions", "billing_dedup")
    for t in tables:  # the backup: everything the sink keeps, in one consistent state
        await conn.execute(f"CREATE TABLE backup_{t} AS SELECT * FROM {t}")
    await s.flush(batch(settings, records[1]))
    for t in tables:  # Postgres restored from the backup
        await conn.execute(f"TRUNCATE {t} CASCADE; INSERT INTO {t} SELECT * FROM backup_{t}")
    await conn.close()
    await s.stop()
    await s.start()
    await s.flush(batch(settings, *records))  # billing replay from before the loss
    restored = await row(url)
    assert (restored["charge_count"], restored["prompt_tokens"]) == (2, 10)


async def test_a_late_charge_revises_the_final_row_reproducibly(sink):
    s, settings, url = sink
    two_days_ago = NOW - timedelta(days=2)
    await s.flush(batch(settings, (0, [charge("old-1", 10, two_days_ago)])))
    await close_through(s, two_days_ago.date())
    final = await row(url)
    assert final["finalized_at"] is not None and final["revision"] == 0
    await s.flush(batch(settings, (1, [charge("old-2", 5, two_days_ago)])))
    revised = await row(url)
    assert (revised["charge_count"], revised["late_charge_count"], revised["revision"]) == (2, 1, 1)
    assert revised["finalized_at"] == final["finalized_at"] and revised["updated_at"] > final["updated_at"]
    await s.flush(batch(settings, (1, [charge("old-2", 5, two_days_ago)])))  # replayed: no change
    again = await row(url)
    assert (again["charge_count"], again["late_charge_count"], again["revision"]) == (2, 1, 1)


async def test_a_row_born_after_its_day_closed_is_final_without_a_revision(sink):
    s, settings, url = sink
    day = (NOW - timedelta(days=3)).date()
    await close_through(s, day)
    await s.flush(batch(settings, (0, [charge("late", 5, NOW - timedelta(days=3))])))
    r = await row(url)
    assert r["finalized_at"] is not None and (r["late_charge_count"], r["revision"]) == (1, 0)


async def test_a_partition_that_starts_over_is_a_new_source_and_closed_days_stay_closed(sink):
    """The embedded broker came back empty: offsets start at 0 again with other records."""
    s, settings, url = sink
    old_day = NOW - timedelta(days=2)
    await s.flush(batch(settings, *[(o, [charge(f"a{o}", 1, old_day)]) for o in range(10)], first="before"))
    await close_through(s, old_day.date())
    await s.flush(batch(settings, (0, [charge("b0", 10)]), (1, [charge("b1", 100, old_day)]), first="after"))
    (today,) = [r for r in await rows(url) if r["date"] == NOW.date()]
    (past,) = [r for r in await rows(url) if r["date"] == old_day.date()]
    assert today["charge_count"] == 1  # offset 0 of the new incarnation is not fenced by the old 9
    assert (past["charge_count"], past["late_charge_count"]) == (11, 1)  # late across the reset
    conn = await asyncpg.connect(url)
    sources = await conn.fetch(
        "SELECT incarnation, retired_at IS NOT NULL AS retired, last_offset FROM billing_sources ORDER BY id"
    )
    await conn.close()
    assert [tuple(r) for r in sources] == [(1, True, 9), (2, False, -1)]


async def test_too_late_charges_are_handed_to_refuse_and_not_counted(sink):
    s, settings, url = sink
    ancient = NOW - timedelta(days=60)
    await close_through(s, (NOW - timedelta(days=1)).date())
    refused: list[PendingCharge] = []

    async def refuse(charges: list[PendingCharge]) -> None:
        refused.extend(charges)

    result = await s.flush(batch(settings, (1, [charge("old", 5, ancient), charge("new", 7)])), refuse)
    assert [c.event_id for c in refused] == ["old"] and result.charges == 1
    assert [r["date"] for r in await rows(url)] == [NOW.date()]


async def test_a_value_postgres_refuses_is_a_data_error_not_a_dead_sink(sink):
    s, settings, url = sink
    await refuse_poison(url, "account_id")
    with pytest.raises(SinkDataError):
        await s.flush(batch(settings, (1, [charge("x", 1, account="poison")])))
    await s.flush(batch(settings, (1, [charge("y", 1)])))  # the sink carries on
    assert (await row(url))["charge_count"] == 1


async def test_a_flush_updates_the_rows_by_model_in_place(sink):
    """A row by model that gains charges is a heap-only (HOT) update: no index of the table gets a
    new entry. An index on a column the upsert changes (updated_at, a sum) would make every flush
    write one entry per row into every index, about twice the upsert's cost."""
    s, settings, _ = sink
    await s.flush(batch(settings, (1, [charge("a", 10)])))  # the row exists

    async def counted(conn: asyncpg.Connection) -> asyncpg.Record:
        outer = conn.transaction()
        await outer.start()
        try:  # the flush's transaction becomes a savepoint: the counters are this transaction's
            await s._write(conn, batch(settings, (2, [charge("b", 20)])))
            return await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated(c.oid) AS updated,"
                " pg_stat_get_xact_tuples_hot_updated(c.oid) AS hot"
                " FROM pg_class c WHERE c.relname = 'daily_model_records'"
            )
        finally:
            await outer.rollback()

    found = await s.run(counted)
    assert (found["updated"], found["hot"]) == (1, 1)
