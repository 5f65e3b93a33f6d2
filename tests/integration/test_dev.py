"""The embedded default with real processes: a Tansu broker, a private Postgres, `billing dev`.

Every test uses its own free port and data dir, so they run next to a broker or Postgres that
the rest of the suite (or a developer) already has on the default ports.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from streams.cli.dev import dev
from streams.config.settings import Settings, get_settings
from streams.embedded.broker import EmbeddedBroker, kafka_answers, parse_bootstrap
from streams.embedded.database_url import effective_database_url
from streams.embedded.ports import free_port
from streams.embedded.postgres import EmbeddedPostgres
from streams.embedded.postgres_probe import postgres_reachable
from streams.errors import BrokerError, TopicMismatchError
from streams.kafka.topics import ensure_topics
from streams.redaction import redact_url

pytestmark = pytest.mark.integration

SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
UNREACHABLE = "postgresql://postgres:hunter2@127.0.0.1:1/billing_dev_test"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the `postgres` OS user can enter (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="billing-dev-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_parse_bootstrap_and_redact() -> None:
    assert parse_bootstrap("127.0.0.1:9093,other:9094") == ("127.0.0.1", 9093)
    assert parse_bootstrap("PLAINTEXT://[::1]:19092") == ("::1", 19092)
    assert parse_bootstrap("kafka") == ("kafka", 9092)
    assert redact_url("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_broker_starts_creates_topics_and_stops(data_dir: Path) -> None:
    port = free_port()
    broker = EmbeddedBroker(data_dir, port=port)
    try:
        assert await broker.start() is True
        status = await broker.status()
        assert status.answering and status.managed and status.pid and _alive(status.pid)
        # a second `up` (another process, same data dir) reuses it instead of failing
        assert await EmbeddedBroker(data_dir, port=port).start() is False

        settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{port}",
            partitions=3,
            data_dir=data_dir,
            charges_topic="c",
            dlq_topic="c.dlq",
        )
        topics = await ensure_topics(settings)
        assert [(t.name, t.partitions, t.created) for t in topics] == [("c", 3, True), ("c.dlq", 3, True)]
        assert all(not t.created for t in await ensure_topics(settings))
        with pytest.raises(TopicMismatchError, match="has 3 partitions"):
            await ensure_topics(settings.model_copy(update={"partitions": 5}))
    finally:
        stopped = await EmbeddedBroker(data_dir, port=port).stop()
    assert stopped
    assert status.pid is not None and not _alive(status.pid)
    assert not await kafka_answers("127.0.0.1", port)
    assert not (await broker.status()).managed
    assert await broker.stop() is False


async def test_broker_refuses_a_port_taken_by_something_else(data_dir: Path) -> None:
    port = free_port()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        with pytest.raises(BrokerError, match="not a Kafka broker"):
            await EmbeddedBroker(data_dir, port=port).start()
    finally:
        server.close()
        await server.wait_closed()


async def test_private_postgres_survives_stop_and_start(data_dir: Path) -> None:
    port = free_port()
    pg = EmbeddedPostgres(data_dir, port=port)
    try:
        url = await pg.ensure_database(UNREACHABLE)
        assert url == f"postgresql://postgres@127.0.0.1:{port}/billing_dev_test"
        assert pg.recorded_url() == url
        settings = Settings(data_dir=data_dir, database_url=UNREACHABLE)
        assert effective_database_url(settings) == url
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2)")
        await conn.close()

        assert await pg.stop() is True
        assert not await postgres_reachable(url, wait=1)
        assert (await pg.status()).running is False
        assert pg.recorded_url() == url  # other processes keep waiting for this server

        again = await EmbeddedPostgres(data_dir).start()  # a new process: port from the dir
        assert again == url
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT sum(n) FROM kept") == 3
        assert await conn.fetchval("SHOW fsync") == "on"
        await conn.close()
        assert (await pg.status()).running
        assert await pg.ensure_database(UNREACHABLE) == url  # idempotent while running
    finally:
        await pg.stop()


@pytest.mark.skipif(
    not asyncio.run(postgres_reachable(SYSTEM_POSTGRES, wait=2)),
    reason="no system Postgres on 127.0.0.1:5432",
)
async def test_ensure_database_uses_the_reachable_server(data_dir: Path) -> None:
    name = f"billing_dev_test_{uuid.uuid4().hex[:12]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    pg = EmbeddedPostgres(data_dir)
    try:
        assert await pg.ensure_database(url) == url
        assert await pg.ensure_database(url) == url
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT current_database()") == name
        await conn.close()
        assert pg.recorded_url() is None
        assert not (await pg.status()).initialized  # no private server was made
    finally:
        conn = await asyncpg.connect(SYSTEM_POSTGRES)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()


def test_cli_up_status_down(data_dir: Path) -> None:
    port = free_port()
    env = {
        "BILLING_DATA_DIR": str(data_dir),
        "BILLING_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "BILLING_DATABASE_URL": UNREACHABLE,
        "BILLING_PARTITIONS": "2",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        up = runner.invoke(dev, ["up"], env=env)
        assert up.exit_code == 0, up.output
        assert "private server" in up.output and "127.0.0.1:" in up.output
        assert "2 partitions" in up.output
        status = runner.invoke(dev, ["status"], env=env)
        assert status.exit_code == 0, status.output
        assert "started by dev up" in status.output and "running (in use)" in status.output
        for result in (up, status):
            assert "hunter2" not in result.output
        get_settings.cache_clear()  # settings are read once per process
        again = runner.invoke(dev, ["up"], env={**env, "BILLING_PARTITIONS": "3"})
        assert again.exit_code == 1 and "BILLING_PARTITIONS" in again.output
        assert len(again.output.strip().splitlines()) == 1  # a one-line reason
    finally:
        get_settings.cache_clear()
        down = runner.invoke(dev, ["down"], env=env)
        get_settings.cache_clear()
    assert down.exit_code == 0, down.output
    assert "stopped" in down.output
    assert not asyncio.run(kafka_answers("127.0.0.1", port))
    assert not asyncio.run(EmbeddedPostgres(data_dir).status()).running
