"""The textbook Faust metering app, the baseline of measurement 3 (`python -m bench.naive_app`).

Per event: validate the charge, read-modify-write its row in a plain Table (Faust's default
in-memory store, with its changelog), and upsert that row's absolute totals into Postgres. It
reads the same topic as the real worker; a batch record is iterated charge by charge (each
charge is an event to this app), which spares it Faust's per-record cost and so is its best case.
No fences and no dedup: it is not exact after a crash, but it is what people write first.

Configured by the environment the bench sets (BILLING_* for broker, topic, database, data dir
and web port, as the real worker; NAIVE_TABLE for the Postgres table).
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg
import faust

from schemas.charge import Charge
from streams.config.settings import Settings
from streams.worker.app import app_options, charges_topic

UPSERT = """
INSERT INTO {table} (account_id, user_id, provider, date, charge_type, prompt_tokens,
    completion_tokens, total_tokens, cached_tokens, reasoning_tokens, charge_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (account_id, user_id, provider, date, charge_type) DO UPDATE SET
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    total_tokens = EXCLUDED.total_tokens, cached_tokens = EXCLUDED.cached_tokens,
    reasoning_tokens = EXCLUDED.reasoning_tokens, charge_count = EXCLUDED.charge_count
"""

DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    account_id text, user_id text, provider text, date date, charge_type text,
    prompt_tokens bigint, completion_tokens bigint, total_tokens bigint, cached_tokens bigint,
    reasoning_tokens bigint, charge_count bigint,
    PRIMARY KEY (account_id, user_id, provider, date, charge_type))
"""


def create_app(settings: Settings, table_name: str) -> faust.App:
    app = faust.App(settings.app_id, **app_options(settings))
    charges = charges_topic(app, settings)
    daily = app.Table("naive-daily", default=None, partitions=settings.partitions)
    upsert = UPSERT.format(table=table_name)
    state: dict[str, Any] = {}

    @app.agent(charges)
    async def meter(stream: faust.StreamT) -> None:
        conn = state["conn"] = await asyncpg.connect(settings.dsn)
        async for value in stream:
            parsed = json.loads(value)
            for item in parsed if isinstance(parsed, list) else [parsed]:
                charge = Charge.model_validate(item)
                day = charge.occurred_at.astimezone(settings.zone).date()
                parts = (charge.account_id, charge.user_id, charge.provider, day, charge.charge_type)
                key = "|".join(map(str, parts))
                row = daily.get(key) or [0, 0, 0, 0, 0, 0]
                row = [
                    row[0] + charge.prompt_tokens,
                    row[1] + charge.completion_tokens,
                    row[2] + charge.total,
                    row[3] + charge.cached_tokens,
                    row[4] + charge.reasoning_tokens,
                    row[5] + 1,
                ]
                daily[key] = row
                await conn.execute(upsert, *parts, *row)

    return app


def main() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, os.environ.get("NAIVE_TABLE", "naive_daily"))
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
