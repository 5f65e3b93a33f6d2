"""The `billing` command line: one entry point, a subcommand per job (DESIGN §6)."""

from __future__ import annotations

import asyncio
import logging

import click

from streams.cli_common import load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="billing-streams")
def main() -> None:
    """billing-streams: LLM usage charges on Kafka -> exact daily billing records in Postgres.

    Configure with BILLING_* environment variables (or a .env file); see the README.
    Start here: `billing dev up`, `billing migrate`, `billing worker`, `billing produce`,
    `billing totals`. `billing demo` runs all of it once on this machine. Over HTTP:
    `billing keys create`, then `billing api`.
    """
    from streams import logs
    from streams.config import get_settings

    try:
        logs.configure(get_settings(), level="WARNING")  # honours BILLING_LOG_FORMAT=json
    except ValueError:  # bad configuration: the command itself reports it in one line
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
def migrate() -> None:
    """Create or upgrade the Postgres schema (versioned, idempotent, safe to run concurrently)."""
    import asyncpg

    from streams.migrate import current_version
    from streams.migrate import migrate as run_migrations

    settings = load_settings()

    async def go() -> tuple[list[str], int]:
        try:
            conn = await asyncpg.connect(settings.dsn, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise click.ClickException(f"cannot reach Postgres: {type(exc).__name__}") from None
        try:
            applied = await run_migrations(conn)
            return [f"{m.version:03d}_{m.name}" for m in applied], await current_version(conn)
        finally:
            await conn.close()

    applied, version = asyncio.run(go())
    if applied:
        click.echo(f"applied {', '.join(applied)}; schema at version {version}")
    else:
        click.echo(f"schema up to date at version {version}")


@main.command()
def worker() -> None:
    """Run a metering worker (start several with the same BILLING_APP_ID to scale out).

    It consumes BILLING_CHARGES_TOPIC, sends bad records to BILLING_DLQ_TOPIC, keeps each day's
    rows in daily_billing_records up to date every BILLING_FLUSH_INTERVAL and finalizes a day once
    its end plus BILLING_GRACE has passed and every partition is read to the end it had then.
    Stop with Ctrl-C or SIGTERM.
    """
    from streams.worker import run_worker

    run_worker(load_settings())


def _register() -> None:
    from streams.api.cli import api, keys
    from streams.dashboard.server import dashboard
    from streams.demo import demo
    from streams.dev import dev
    from streams.dlq_cli import dlq
    from streams.produce_cli import produce
    from streams.replay_cli import rebuild, replay
    from streams.totals import totals

    for command in (dev, produce, totals, dlq, replay, rebuild, dashboard, demo, api, keys):
        main.add_command(command)


_register()
