"""Session fixtures: one real Tansu broker and one real Postgres server for the whole run.

Postgres is BILLING_TEST_DATABASE_URL (default: the local server on 127.0.0.1:5432) when it
answers, else a private server started from local or pip-installed binaries. Every test gets
its own database and its own topics, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from streams.embedded.broker import EmbeddedBroker
from streams.embedded.postgres import EmbeddedPostgres
from streams.embedded.postgres_probe import postgres_reachable
from tests.support import create_database, free_port


@pytest.fixture(scope="session", autouse=True)
def pinned_clock() -> Iterator[None]:
    """BILLING_TEST_CLOCK=2026-12-03T23:59:00+00:00 runs the tests' own wall clock from that
    moment on (it keeps ticking), to show that no test depends on the time of day. Only this
    process moves: the broker, Postgres and the workers keep the real clock, and every closing
    decision is Postgres' now(). Pin a moment less than a day before the real time (the latest
    00:30 or 23:59 UTC that has passed): earlier, and the pipeline has never seen the pinned
    charges' times as future; less than a day, or the grace a test derives from its own clock
    names other days to Postgres' clock (a pin two days back closes the test's "today" at once)."""
    at = os.environ.get("BILLING_TEST_CLOCK")
    if not at:
        yield
        return
    import time_machine

    with time_machine.travel(datetime.fromisoformat(at), tick=True):
        yield


SERVER_URL = os.environ.get("BILLING_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp root: a private Postgres runs as another OS user.
    path = Path(tempfile.mkdtemp(prefix="billing-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def broker(run_dir: Path) -> AsyncIterator[str]:
    """A Tansu broker of our own on a free port (memory storage, gone when it stops)."""
    instance = EmbeddedBroker(run_dir / "broker", "127.0.0.1", free_port())
    await instance.start()
    yield instance.address
    await instance.stop()


@pytest.fixture(scope="session")
async def pg_server(run_dir: Path) -> AsyncIterator[str]:
    """URL of a Postgres server's maintenance database."""
    if await postgres_reachable(SERVER_URL):
        yield SERVER_URL
        return
    private = EmbeddedPostgres(run_dir / "pg")
    url = await private.start()
    yield url
    await private.stop()


async def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    url = await create_database(pg_server)
    yield url
    await drop_database(pg_server, url)
