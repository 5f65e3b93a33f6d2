"""`billing migrate` twice and concurrently; `billing demo` from nothing on a fresh broker port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from streams.cli.demo import with_database
from streams.sink.migrate import available_migrations
from tests.conftest import drop_database
from tests.integration.test_demo_isolation import demo_databases
from tests.support import ROOT, free_port, unique

pytestmark = pytest.mark.integration


async def test_migrate_is_idempotent_and_safe_concurrently(pg_server: str):
    name = unique("billing_mig").replace("-", "_")
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_DATA_DIR": "/nonexistent-billing-dir"}
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streams",
                "migrate",
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = [(await p.communicate())[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        assert sum("applied 001_initial" in out for out in outputs) == 1, outputs
        again = subprocess.run(
            [sys.executable, "-m", "streams", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        latest = available_migrations()[-1].version
        assert again.returncode == 0 and f"up to date at version {latest}" in again.stdout
        conn = await asyncpg.connect(url)
        try:
            # Versions may leave gaps (numbers are reserved by parallel work): one row per file.
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
                available_migrations()
            )
        finally:
            await conn.close()
    finally:
        await drop_database(pg_server, url)


def test_migrate_unreachable_postgres_is_one_line(tmp_path: Path):
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": "postgresql://billing:s3cret-pw@127.0.0.1:1/x",
        "BILLING_DATA_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "streams", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "Postgres" in out.stderr
    assert "s3cret-pw" not in out.stderr + out.stdout


def test_demo_from_nothing_prints_real_totals(tmp_path: Path, pg_server: str):
    """`make demo` runs `billing demo`: here on a broker port where nothing runs yet."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        BILLING_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        BILLING_DATABASE_URL=pg_server.rsplit("/", 1)[0] + "/billing",
        BILLING_DATA_DIR=str(data),
        COLUMNS="200",
    )
    out = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--charges", "3000", "--accounts", "8"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for name in demo_databases(out.stdout):  # the demo leaves its rows for the user to query
        asyncio.run(drop_database(pg_server, with_database(pg_server, name)))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = [line for line in out.stdout.splitlines() if line.startswith("demo: ")]
    assert summary and "3,000 charges" in summary[0] and "exact against what was produced" in summary[0], (
        out.stdout
    )
    assert "TOTAL" in out.stdout and "3,000" in out.stdout
    # It stopped the broker it started.
    assert not list((data / "broker").glob("*.pid"))
