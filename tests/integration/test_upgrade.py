"""An installation of the first schema (migrations 1-3, populated) upgrades with `billing migrate`
and keeps every total; the sink then goes on from where it stood."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from schemas.charge import Charge
from streams.config.settings import Settings
from streams.rules.batch import Batch
from streams.sink.migrate import available_migrations, migrate
from streams.sink.postgres import PostgresSink
from tests.support import unique

pytestmark = pytest.mark.integration
DAY = date(2026, 11, 20)
VALUES = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "charge_count",
    "late_charge_count",
    "revision",
    "finalized_at",
    "created_at",
    "updated_at",
)


async def test_a_populated_schema_3_database_upgrades_and_keeps_every_row(pg_server: str) -> None:
    name = unique("billing_upgrade").replace("-", "_")
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in available_migrations():
            if m.version <= 3:
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
                )
        rows = [
            (
                f"acct-{i}",
                f"u{i % 3}",
                "openai",
                DAY + timedelta(days=i % 3),
                "completion",
                10 * i,
                i,
                11 * i,
                i // 2,
                0,
                i + 1,
                i % 2,
                i % 2,
                i % 4,
                100 + i,
            )
            for i in range(60)
        ]
        await conn.executemany(
            """INSERT INTO daily_billing_records (account_id, user_id, provider, date, charge_type,
                   prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens,
                   charge_count, late_charge_count, revision, source_partition, last_offset, finalized_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,
                       CASE WHEN $4 <= '2026-11-21'::date THEN now() END)""",
            rows,
        )
        await conn.execute(
            "INSERT INTO billing_partitions (topic, partition, applied_offset, first_record)"
            " SELECT 'charges', p, 200, 'fp' || p FROM generate_series(0, 3) p"
        )
        await conn.execute(
            "INSERT INTO billing_state (topic, closed_through) VALUES ('charges', '2026-11-21')"
        )
        await conn.execute(
            "INSERT INTO billing_closures (topic, closed_through, partition, applied_offset)"
            " SELECT 'charges', '2026-11-21', p, 150 FROM generate_series(0, 3) p"
        )
        await conn.execute(
            'INSERT INTO billing_seen_events (event_id, partition, "offset", position)'
            " VALUES ('legacy-1', 0, 120, 0)"
        )
        before = {
            tuple(r[:5]): dict(r)
            for r in await conn.fetch(
                "SELECT account_id, user_id, provider, date, charge_type, * FROM daily_billing_records"
            )
        }
        await migrate(conn)
        after = {
            tuple(r[:5]): dict(r)
            for r in await conn.fetch(
                "SELECT account_id, user_id, provider, date, charge_type, * FROM daily_billing_records"
            )
        }
        assert set(after) == set(before)
        for key, row in after.items():
            assert {c: row[c] for c in VALUES} == {c: before[key][c] for c in VALUES}, key
        assert await conn.fetchval("SELECT closed_through FROM billing_calendar") == date(2026, 11, 21)
        sources = await conn.fetch(
            "SELECT partition, incarnation, first_record, min_day, max_day FROM billing_sources"
            " WHERE topic = 'charges' ORDER BY partition"
        )
        assert [(r[0], r[1], r[2]) for r in sources] == [(p, 1, f"fp{p}") for p in range(4)]
        assert sources[0]["min_day"] == DAY  # the days each partition fed, for rebuild's refusals
        marks = await conn.fetch("SELECT applied_offset FROM billing_source_closures")
        assert [r[0] for r in marks] == [150] * 4
    finally:
        await conn.close()

    # The sink carries on: its fences, closures and the old ledger still hold.
    settings = Settings(_env_file=None, database_url=url, partitions=4)
    sink = PostgresSink(settings)
    await sink.start()
    try:
        old = datetime(2026, 11, 21, 12, tzinfo=UTC)  # the day of acct-1's row, closed
        batch = Batch(settings.zone)

        def mk(event_id: str) -> Charge:
            return Charge(
                event_id=event_id,
                occurred_at=old,
                account_id="acct-1",
                user_id="u1",
                provider="openai",
                charge_type="completion",
                prompt_tokens=5,
                completion_tokens=0,
            )

        batch.add_record(0, 180, [mk("replayed")], key=b"acct-1", value=b"{}")  # at or below the fence
        batch.add_record(0, 201, [mk("legacy-1")], key=b"acct-1", value=b"{}")  # re-sent, seen before
        batch.add_record(0, 202, [mk("new-1")], key=b"acct-1", value=b"{}")  # new and late
        result = await sink.flush(batch)
        assert (result.charges, result.duplicates, result.late) == (2, 1, 1)
    finally:
        await sink.stop()
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM daily_billing_records WHERE account_id = 'acct-1' AND user_id = 'u1'"
        )
        assert (row["charge_count"], row["prompt_tokens"], row["late_charge_count"]) == (3, 15, 2)
    finally:
        await conn.close()
        admin = await asyncpg.connect(pg_server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
