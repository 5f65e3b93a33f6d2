"""The `billing` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import click

from streams.cli import errors
from streams.cli.common import load_settings


class BillingGroup(click.Group):
    """The root command: whatever a subcommand did not handle ends as one line with the exit
    code of its cause (see streams.cli.errors), unless --debug asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if errors.debug_enabled():
                errors.print_cause(exc, _secrets(_settings_or_none()))
            raise
        except Exception as exc:
            settings = _settings_or_none()
            if errors.debug_enabled():
                errors.print_traceback(exc, _secrets(settings))
            failure = errors.translate(exc, settings) or errors.Failure(
                f"unexpected error: {errors.reason(exc, _secrets(settings))}"
                " (run again with --debug for the traceback)"
            )
            raise failure from exc


def _secrets(settings: Any) -> tuple[str, ...]:
    return tuple(settings.secret_values()) if settings is not None else ()


def _settings_or_none() -> Any:
    from streams.config.settings import get_settings

    try:
        return get_settings()
    except ValueError:
        return None


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # the same switch as BILLING_LOG_LEVEL=debug, also for a worker this starts
        os.environ["BILLING_LOG_LEVEL"] = "debug"


@click.group(cls=BillingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="billing-streams")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_debug,
    help="Show tracebacks and debug logs (as BILLING_LOG_LEVEL=debug).",
)
def main() -> None:
    """billing-streams: LLM usage charges on Kafka -> exact daily billing records in Postgres.

    Configure with BILLING_* environment variables (or a .env file); see the README.
    Start here: `billing dev up`, `billing migrate`, `billing worker`, `billing produce`,
    `billing totals`. `billing demo` runs all of it once on this machine. Over HTTP:
    `billing keys create`, then `billing api`. A failure is one line with a next step and an
    exit code of docs/operations.md; --debug shows the traceback.
    """
    from streams import logs
    from streams.config.settings import get_settings

    try:
        level = None if errors.debug_enabled() else "WARNING"
        logs.configure(get_settings(), level=level)  # honours BILLING_LOG_FORMAT=json
    except ValueError:  # bad configuration: the command itself reports it in one line
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
def migrate() -> None:
    """Create or upgrade the Postgres schema (versioned, idempotent, safe to run concurrently).

    An empty price book gets the default prices bundled with genai-prices.
    """
    from streams.ops.prices import seed_defaults
    from streams.sink.migrate import current_version
    from streams.sink.migrate import migrate as run_migrations

    settings = load_settings()

    async def go() -> tuple[list[str], int, int]:
        conn = await errors.connect(settings.dsn)
        try:
            applied = await run_migrations(conn)
            seeded = await seed_defaults(conn)
            return [f"{m.version:03d}_{m.name}" for m in applied], await current_version(conn), seeded
        finally:
            await conn.close()

    applied, version, seeded = asyncio.run(go())
    if applied:
        click.echo(f"applied {', '.join(applied)}; schema at version {version}")
    else:
        click.echo(f"schema up to date at version {version}")
    if seeded:
        click.echo(f"price book: {seeded:,} default prices from genai-prices (see billing prices list)")


@main.command()
def worker() -> None:
    """Run a metering worker (start several with the same BILLING_APP_ID to scale out).

    It consumes BILLING_CHARGES_TOPIC, sends bad records to BILLING_DLQ_TOPIC, keeps each day's
    rows in daily_billing_records up to date every BILLING_FLUSH_INTERVAL and finalizes a day once
    its end plus BILLING_GRACE has passed and every partition is read to the end it had then.
    It checks first that the broker answers and the database is migrated (exit 4 or 5 if not).
    Stop with Ctrl-C or SIGTERM.
    """
    from streams.worker.run import run_worker

    run_worker(load_settings())


def _register() -> None:
    from streams.cli.api import api, keys
    from streams.cli.dashboard import dashboard
    from streams.cli.demo import demo
    from streams.cli.dev import dev
    from streams.cli.dlq import dlq
    from streams.cli.prices import prices
    from streams.cli.produce import produce
    from streams.cli.rebuild import rebuild
    from streams.cli.replay import replay
    from streams.cli.reprice import reprice
    from streams.cli.totals import totals

    for command in (dev, produce, totals, dlq, replay, rebuild, reprice, dashboard, demo, api, keys, prices):
        main.add_command(command)


_register()
