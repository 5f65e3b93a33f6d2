"""Two sinks flushing the same partition at once serialize on its `billing_partitions` row.

During a rebalance the old owner may still be flushing a partition when the new owner reads it
again from the last committed offset, so both write the same source's records. The second must
wait for the first to commit and then skip what the first applied. The test makes that overlap
certain instead of likely: a gate (an advisory lock the test holds, taken by a trigger on the
daily rows) stops the first flush inside its transaction, after it locked the partition; the
second flush is then started, and Postgres itself is asked what it waits on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streams.config.settings import Settings
from streams.sink import sql as sink_sql
from streams.sink.postgres import PostgresSink
from tests.integration.test_sink import batch, charge, row
from tests.support import wait_until

pytestmark = pytest.mark.integration
GATE = 7_041_914  # the advisory lock key of the gate


async def install_gate(conn: asyncpg.Connection) -> None:
    """Every write to the daily rows first takes the gate (released at its transaction's end)."""
    await conn.execute(
        f"""CREATE FUNCTION pass_gate() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_advisory_xact_lock({GATE}); RETURN NULL; END $$;
           CREATE TRIGGER gate BEFORE INSERT OR UPDATE ON daily_billing_records
           FOR EACH STATEMENT EXECUTE FUNCTION pass_gate()"""
    )


async def waiting(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The backends of this database waiting on a lock: pid, what they wait on, who blocks them,
    and the statement they run."""
    return await conn.fetch(
        """SELECT pid, wait_event, pg_blocking_pids(pid) AS blockers, query FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock'"""
    )


@pytest.fixture
async def two_sinks(database: str) -> AsyncIterator[tuple[PostgresSink, PostgresSink, Settings]]:
    settings = Settings(_env_file=None, database_url=database, sink_connections=1)  # type: ignore[call-arg]
    first, second = PostgresSink(settings), PostgresSink(settings)
    await first.start()
    await second.start()
    yield first, second, settings
    await first.stop()
    await second.stop()


async def test_the_second_flush_of_a_partition_waits_for_the_first_and_skips_what_it_applied(
    two_sinks, database: str
) -> None:
    first, second, settings = two_sinks
    charges = [charge(f"e{offset}", prompt=offset + 1) for offset in range(9)]
    old_owner = batch(settings, *((o, [charges[o]]) for o in range(0, 6)))  # offsets 0..5
    new_owner = batch(settings, *((o, [charges[o]]) for o in range(3, 9)))  # 3..8: 3..5 again

    control = await asyncpg.connect(database)
    try:
        await install_gate(control)
        await control.execute("SELECT pg_advisory_lock($1)", GATE)
        flushing = asyncio.create_task(first.flush(old_owner))

        async def first_at_gate() -> bool:
            return any(w["wait_event"] == "advisory" for w in await waiting(control))

        await wait_until(first_at_gate, 30, "the first flush held at the gate inside its transaction")
        [gated] = [w for w in await waiting(control) if w["wait_event"] == "advisory"]
        rival = asyncio.create_task(second.flush(new_owner))

        async def second_blocked_by_first() -> bool:
            return any(
                gated["pid"] in w["blockers"] for w in await waiting(control) if w["pid"] != gated["pid"]
            )

        await wait_until(second_blocked_by_first, 30, "the second flush waiting for the first")
        [blocked] = [w for w in await waiting(control) if w["pid"] != gated["pid"]]
        assert blocked["query"].strip() == sink_sql.LOCK_PARTITIONS.strip()  # the partition lock
        assert not rival.done()
        await control.execute("SELECT pg_advisory_unlock($1)", GATE)
        done_first, done_second = await asyncio.wait_for(asyncio.gather(flushing, rival), 60)
        fence = await control.fetchval(
            "SELECT applied_offset FROM billing_partitions WHERE topic = $1 AND partition = 0",
            settings.charges_topic,
        )
    finally:
        await control.close()

    assert (done_first.charges, done_second.charges) == (6, 3)  # 3..5 were fenced off
    daily = await row(database)
    assert daily["charge_count"] == 9
    assert daily["prompt_tokens"] == sum(range(1, 10))
    assert fence == 8
