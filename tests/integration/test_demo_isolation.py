"""`billing demo` never hurts what the user has: two at once on one server, next to a
`billing_demo` database someone else made, each in a database of its own that stays queryable."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from streams.cli.demo import DEMO_DATABASE_PREFIX, with_database
from tests.conftest import drop_database
from tests.support import ROOT

pytestmark = pytest.mark.integration
PLANTED = "DemoQueryPW42"


def demo_databases(output: str) -> set[str]:
    """Names of the databases a demo said it created (its closing lines name them)."""
    return set(re.findall(re.escape(DEMO_DATABASE_PREFIX) + r"[0-9a-f_]+", output))


async def run_demo(env: dict[str, str]) -> tuple[int, str]:
    command = [sys.executable, "-m", "streams", "demo", "--charges", "1500", "--accounts", "6"]
    pipe, merged = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
    proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=ROOT, stdout=pipe, stderr=merged)
    out, _ = await asyncio.wait_for(proc.communicate(), 400)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_two_concurrent_demos_end_exact_and_leave_billing_demo_alone(
    pg_server: str, broker: str, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(pg_server)
    try:
        existed = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'billing_demo'")
        if not existed:
            await admin.execute('CREATE DATABASE "billing_demo"')
    finally:
        await admin.close()
    theirs = await asyncpg.connect(with_database(pg_server, "billing_demo"))
    try:
        await theirs.execute("CREATE TABLE IF NOT EXISTS not_the_demos (note text)")
        await theirs.execute("INSERT INTO not_the_demos VALUES ('someone else''s data')")
        marked = await theirs.fetchval("SELECT count(*) FROM not_the_demos")
    finally:
        await theirs.close()

    base = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    # trust auth ignores the password: it is here to be absent from every line printed.
    configured = with_database(pg_server, "billing").replace("postgres@", f"postgres:{PLANTED}@", 1)
    envs = [
        base
        | {
            "BILLING_KAFKA_BOOTSTRAP": broker,
            "BILLING_DATABASE_URL": f"{configured}?password={PLANTED}",
            "BILLING_DATA_DIR": str(tmp_path / f"data{i}"),
        }
        for i in range(2)
    ]
    results = await asyncio.gather(*(run_demo(env) for env in envs))
    created = [demo_databases(out) for _, out in results]
    try:
        for code, out in results:
            assert code == 0, out[-3000:]
            summary = [line for line in out.splitlines() if line.startswith("demo: ")]
            assert summary and "exact against what was produced" in summary[0], out[-3000:]
            assert PLANTED not in out
            assert "billing totals" in out and "DROP DATABASE" in out
        assert all(len(names) == 1 for names in created) and created[0] != created[1]
        theirs = await asyncpg.connect(with_database(pg_server, "billing_demo"))
        try:
            assert await theirs.fetchval("SELECT count(*) FROM not_the_demos") == marked
        finally:
            await theirs.close()
        for names in created:  # what the closing hint promises: the rows are still there
            conn = await asyncpg.connect(with_database(pg_server, next(iter(names))))
            try:
                assert await conn.fetchval("SELECT sum(charge_count) FROM daily_billing_records") == 1500
            finally:
                await conn.close()
    finally:
        for name in set().union(*created):
            await drop_database(pg_server, with_database(pg_server, name))
        if not existed:
            await drop_database(pg_server, with_database(pg_server, "billing_demo"))
