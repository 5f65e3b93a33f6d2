"""The dashboard never writes: every connection it queries through is read-only in Postgres.

Its queries are SELECTs, but a bug (or a future query) could still write; the promise is that
Postgres refuses it. The test takes connections from the running application's own pool, the
one every handler uses, and tries to change the rows, inside and outside an explicit
transaction: Postgres must refuse each write and the rows must stay as they were.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web

from streams.dashboard.server import POOL, create_app
from tests.integration.test_dashboard import ROWS, insert, settings_for

pytestmark = pytest.mark.integration
WRITES = (
    "UPDATE daily_billing_records SET charge_count = charge_count + 1",
    "DELETE FROM daily_billing_records",
    "INSERT INTO billing_skips (topic, partition, \"offset\") VALUES ('charges', 0, 0)",
)


async def total_charges(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT sum(charge_count) FROM daily_billing_records"))
    finally:
        await conn.close()


@pytest.mark.parametrize("statement", WRITES, ids=["update", "delete", "insert_skip"])
async def test_a_write_through_the_dashboards_connections_is_refused(database: str, statement: str) -> None:
    await insert(database, ROWS)
    app = create_app(settings_for(database))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # opens the pool the handlers query through
    try:
        pool = app[POOL]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute(statement)
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                async with conn.transaction():
                    await conn.execute(statement)
    finally:
        await runner.cleanup()
    assert await total_charges(database) == sum(r["charge_count"] for r in ROWS)
