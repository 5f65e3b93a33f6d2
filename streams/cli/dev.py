"""`billing dev up/down/status`: the embedded default (a Tansu broker and a Postgres on this
machine, no Docker), so that the demo and the tests need nothing but a Python environment.

`down` only stops what lives under BILLING_DATA_DIR (the broker's pid file, the private
Postgres): a system Postgres or a broker someone else started is never touched.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.table import Table

from streams.cli import errors
from streams.cli.common import read_settings
from streams.cli.terminal import console, plain
from streams.config.settings import Settings
from streams.embedded.broker import EmbeddedBroker
from streams.embedded.postgres import EmbeddedPostgres
from streams.embedded.postgres_probe import postgres_reachable
from streams.kafka.client import aiokafka_options
from streams.kafka.retention import check_retention
from streams.kafka.topics import describe_partitions, ensure_topics
from streams.redaction import redact_url

T = TypeVar("T")


def _settings() -> Settings:
    return read_settings()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """`errors.run`: the embedded components' errors, Kafka's and the OS's as one line."""
    return errors.run(coro, shown=(KafkaError, OSError))


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("component", no_wrap=True)
    table.add_column("state")
    table.add_column("where", overflow="fold")  # a URL or path cut with "…" would be useless
    return table


@click.group()
def dev() -> None:
    """The embedded default: a Kafka-compatible broker (Tansu) and Postgres on this machine.

    `billing dev up` makes everything the worker needs available, `billing dev status` shows
    it, `billing dev down` stops it again. State (pid files, logs, a private Postgres) lives
    in BILLING_DATA_DIR.
    """


@dev.command()
@click.option(
    "--wait",
    "wait_seconds",
    default=30.0,
    show_default=True,
    help="Seconds to wait for the broker and Postgres to come up.",
)
def up(wait_seconds: float) -> None:
    """Start the broker and Postgres (if needed) and create the topics.

    \b
    - Broker: Tansu at BILLING_KAFKA_BOOTSTRAP (memory only: topics vanish when it stops);
      a broker that already answers there is reused.
    - Postgres: BILLING_DATABASE_URL when it answers (its database is created if missing),
      else a private server under BILLING_DATA_DIR/postgres on a free port. Other billing
      commands find the private server's URL there.
    - Topics: BILLING_CHARGES_TOPIC and BILLING_DLQ_TOPIC with BILLING_PARTITIONS partitions.

    Safe to run again: it only starts what is not running.
    """
    settings = _settings()

    async def go() -> Table:
        broker = EmbeddedBroker.from_settings(settings)
        started = await broker.start(wait_seconds)
        pg = EmbeddedPostgres(settings.data_dir)
        url = await pg.ensure_database(settings.dsn)
        topics = await ensure_topics(settings)
        for warning in await check_retention(settings):
            console(stderr=True).print("[yellow]warning:[/]", plain(warning))
        table = _table("billing dev up")
        table.add_row(
            "broker",
            "started" if started else "already running (reused)",
            broker.address + (f"\nlog {broker.log_file}" if started else ""),
        )
        private = url != settings.dsn
        table.add_row(
            "postgres",
            "private server" if private else "configured server",
            redact_url(url) + (f"\nlog {pg.log_file}" if private else ""),
        )
        for topic in topics:
            table.add_row(
                f"topic {topic.name}",
                "created" if topic.created else "exists",
                f"{topic.partitions} partitions",
            )
        return table

    console().print(_run(go()))


@dev.command()
def down() -> None:
    """Stop what `billing dev up` started: the broker and the private Postgres.

    A broker it did not start and the configured (system) Postgres are left alone. The
    private Postgres keeps its data for the next `up`; the broker's topics are gone.
    """
    settings = _settings()

    async def go() -> Table:
        broker = EmbeddedBroker.from_settings(settings)
        pg = EmbeddedPostgres(settings.data_dir)
        table = _table("billing dev down")
        table.add_row("broker", "stopped" if await broker.stop() else "not started by dev up", broker.address)
        stopped = await pg.stop()
        pg.forget()
        table.add_row("postgres (private)", "stopped" if stopped else "not running", str(pg.pgdata))
        return table

    console().print(_run(go()))


@dev.command()
def status() -> None:
    """Show whether the broker, Postgres and the topics are there (exit 0 either way)."""
    settings = _settings()

    async def go() -> Table:
        broker = await EmbeddedBroker.from_settings(settings).status()
        pg = EmbeddedPostgres(settings.data_dir)
        private = await pg.status()
        table = _table("billing dev status")
        state = (
            "running (started by dev up)"
            if broker.managed
            else "running (not ours)"
            if broker.answering
            else "down"
        )
        table.add_row("broker", state, broker.address)
        if broker.answering:
            for name, count in (await _topic_counts(settings)).items():
                table.add_row(
                    f"topic {name}", "exists" if count else "missing", f"{count} partitions" if count else ""
                )
        configured = await postgres_reachable(settings.dsn)
        in_use = "" if private.url else " (in use)"
        table.add_row(
            "postgres (configured)",
            ("reachable" if configured else "unreachable") + in_use,
            redact_url(settings.dsn),
        )
        if private.initialized or private.url:
            table.add_row(
                "postgres (private)",
                ("running" if private.running else "stopped") + (" (in use)" if private.url else ""),
                redact_url(private.url) if private.url else str(pg.pgdata),
            )
        return table

    console().print(_run(go()))


async def _topic_counts(settings: Settings) -> dict[str, int]:
    """Partition counts of our topics (0 = missing); never auto-creates one."""
    names = list(dict.fromkeys([settings.charges_topic, settings.dlq_topic]))
    admin = AIOKafkaAdminClient(**aiokafka_options(settings), request_timeout_ms=5_000)
    try:
        await admin.start()
        counts = await describe_partitions(admin, names)
    except KafkaError:
        counts = {}
    finally:
        await admin.close()
    return {name: counts.get(name, 0) for name in names}
