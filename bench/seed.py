"""Measurement 2: the Django/Celery pipeline we replace, re-implemented with asyncpg, same Postgres.

What the seed did (Smarter's `account/tasks.py`):
- `create_charge`: one `Charge.objects.create(...)` per LLM call, in Django's autocommit, so one
  INSERT in its own transaction. Celery runs it on a prefork pool whose default concurrency is
  the CPU count; so do we (one connection per core). Left out, in the seed's favour: the two
  lookups it made first (user, then profile) and the Celery broker round trip.
- `aggregate_daily_billing_records` (Celery Beat): a `count()`, then the distinct
  (user, account, created_at date, charge_type) groups, and for each group in one transaction:
  a SUM query, a `get` of the daily row, then `save()` (an UPDATE of every column) or
  `create()` (an INSERT), then the group's `delete()` (Django's fast delete: one DELETE).
Tables as Django makes them: bigserial ids, an index per foreign key. The seed's unique key
(account, user, provider, date) omits charge_type and would make this job fail on the second
charge type of a day, so the key here includes charge_type: the seed at its best.
Throughput = charges / (time to insert them + time to aggregate them).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import asyncpg

from schemas.charge import Charge

SCHEMA = """
CREATE TABLE account_charge (
    id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    account_id text NOT NULL, user_id text NOT NULL, charge_type varchar(20) NOT NULL,
    prompt_tokens integer NOT NULL, completion_tokens integer NOT NULL, total_tokens integer NOT NULL,
    model varchar(255) NOT NULL, reference varchar(255) NOT NULL);
CREATE INDEX account_charge_account_id ON account_charge (account_id);
CREATE INDEX account_charge_user_id ON account_charge (user_id);
CREATE TABLE account_dailybillingrecord (
    id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    account_id text NOT NULL, user_id text NOT NULL, provider varchar(255) NOT NULL, date date NOT NULL,
    charge_type varchar(20) NOT NULL, prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL, total_tokens integer NOT NULL,
    UNIQUE (account_id, user_id, provider, date, charge_type));
CREATE INDEX account_dailybillingrecord_account_id ON account_dailybillingrecord (account_id);
CREATE INDEX account_dailybillingrecord_user_id ON account_dailybillingrecord (user_id);
"""

INSERT = """INSERT INTO account_charge (created_at, updated_at, account_id, user_id, charge_type,
    prompt_tokens, completion_tokens, total_tokens, model, reference)
VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"""
COUNT = """SELECT count(*) FROM (SELECT DISTINCT user_id, account_id,
    (created_at AT TIME ZONE 'UTC')::date, charge_type FROM account_charge) AS g"""
GROUPS = """SELECT DISTINCT user_id, account_id, (created_at AT TIME ZONE 'UTC')::date AS day, charge_type
FROM account_charge"""
_GROUP = """user_id = $1 AND account_id = $2 AND (created_at AT TIME ZONE 'UTC')::date = $3
    AND charge_type = $4"""
SUM = f"""SELECT sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
    sum(total_tokens) AS total FROM account_charge WHERE {_GROUP}"""  # noqa: S608
GET = """SELECT * FROM account_dailybillingrecord
WHERE user_id = $1 AND account_id = $2 AND date = $3 AND charge_type = $4 LIMIT 21"""
SAVE = """UPDATE account_dailybillingrecord SET created_at = $2, updated_at = now(), account_id = $3,
    user_id = $4, provider = $5, date = $6, charge_type = $7, prompt_tokens = $8,
    completion_tokens = $9, total_tokens = $10 WHERE id = $1"""
CREATE = """INSERT INTO account_dailybillingrecord (created_at, updated_at, account_id, user_id,
    provider, date, charge_type, prompt_tokens, completion_tokens, total_tokens)
VALUES (now(), now(), $1, $2, '', $3, $4, $5, $6, $7) RETURNING id"""
DELETE = f"DELETE FROM account_charge WHERE {_GROUP}"  # noqa: S608


@dataclass
class SeedResult:
    charges: int
    groups: int
    insert_seconds: float
    aggregate_seconds: float
    concurrency: int

    @property
    def rate(self) -> float:
        return self.charges / (self.insert_seconds + self.aggregate_seconds)

    @property
    def insert_rate(self) -> float:
        return self.charges / self.insert_seconds


async def _insert_all(conn: asyncpg.Connection, charges: list[Charge]) -> None:
    for c in charges:
        await conn.fetchval(
            INSERT,
            c.occurred_at,
            c.account_id,
            c.user_id,
            c.charge_type,
            c.prompt_tokens,
            c.completion_tokens,
            c.total,
            c.model or "",
            c.reference or "",
        )


async def _aggregate(conn: asyncpg.Connection) -> int:
    await conn.fetchval(COUNT)
    groups = await conn.fetch(GROUPS)
    for user, account, day, charge_type in groups:
        async with conn.transaction():
            sums = await conn.fetchrow(SUM, user, account, day, charge_type)
            record = await conn.fetchrow(GET, user, account, day, charge_type)
            if record is not None:
                await conn.execute(
                    SAVE,
                    record["id"],
                    record["created_at"],
                    account,
                    user,
                    record["provider"],
                    day,
                    charge_type,
                    record["prompt_tokens"] + sums["prompt"],
                    record["completion_tokens"] + sums["completion"],
                    record["total_tokens"] + sums["total"],
                )
            else:
                await conn.fetchval(
                    CREATE, account, user, day, charge_type, sums["prompt"], sums["completion"], sums["total"]
                )
            await conn.execute(DELETE, user, account, day, charge_type)
    return len(groups)


async def run_seed(database: str, charges: list[Charge], concurrency: int | None = None) -> SeedResult:
    """Insert like `create_charge`, aggregate like the Beat job, check the sums survived."""
    concurrency = concurrency or os.cpu_count() or 2
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(SCHEMA)
        conns = [await asyncpg.connect(database) for _ in range(concurrency)]
        started = time.perf_counter()
        try:
            await asyncio.gather(*(_insert_all(c, charges[i::concurrency]) for i, c in enumerate(conns)))
        finally:
            for c in conns:
                await c.close()
        inserted = time.perf_counter()
        groups = await _aggregate(conn)
        done = time.perf_counter()
        left = await conn.fetchval("SELECT count(*) FROM account_charge")
        total = await conn.fetchval("SELECT coalesce(sum(total_tokens), 0) FROM account_dailybillingrecord")
    finally:
        await conn.close()
    want = sum(c.total for c in charges)
    if left or total != want:
        raise RuntimeError(f"seed baseline lost charges: {left} left, total {total} != {want}")
    return SeedResult(len(charges), groups, inserted - started, done - inserted, concurrency)
