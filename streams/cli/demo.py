"""`billing demo`: the main job once, end to end, on the embedded default.

Broker and Postgres come up if they are not there, a real worker process meters a few days of
synthetic charges, and the demo waits until Postgres holds every charge and the past days are
final, then prints the totals, checks them against what it produced, and stops its worker.

Why a database of its own, created under a unique name: a demo must never hurt what the user
already has. It never drops a database (an earlier demo's, or a `billing_demo` someone made),
two demos on one server do not meet, and what it metered stays there to be queried afterwards;
its closing lines say where, and what it stopped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.cli.common import read_settings
from streams.cli.terminal import console as make_console
from streams.cli.terminal import plain
from streams.cli.totals import render_table
from streams.config.settings import Settings
from streams.embedded.broker import EmbeddedBroker
from streams.embedded.ports import free_port
from streams.embedded.postgres import EmbeddedPostgres
from streams.embedded.postgres_probe import postgres_reachable
from streams.kafka.topics import ensure_topics
from streams.ops.prices import seed_defaults
from streams.ops.totals import TotalsQuery, fetch_totals
from streams.producer.producer import ChargeProducer
from streams.redaction import redact_url
from streams.sink.migrate import migrate
from streams.testing.synthetic import synthetic_charges

#: Each run's database is this prefix plus the run's id (time and random): never an existing one.
DEMO_DATABASE_PREFIX = "billing_demo_"


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead (user, password and query string kept)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(name, safe="")))


async def _create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` (failing if it exists: it is not ours),
    migrate it, give it the default prices and return its URL."""
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # name: our prefix, digits, hex
    finally:
        await admin.close()
    target = with_database(url, name)
    conn = await asyncpg.connect(target)
    try:
        await migrate(conn)
        await seed_defaults(conn)  # as `billing migrate` does: the demo's rows have a cost
    finally:
        await conn.close()
    return target


async def _progress(url: str, topic: str) -> tuple[int, Any]:
    conn = await asyncpg.connect(url)
    try:
        counted = await conn.fetchval("SELECT coalesce(sum(charge_count), 0) FROM daily_billing_records")
        closed = await conn.fetchval("SELECT closed_through FROM billing_calendar")
        return int(counted), closed
    finally:
        await conn.close()


async def _run(
    settings: Settings, charges: int, days: int, accounts: int, seed: int, console: Console
) -> None:
    started = time.monotonic()
    broker = EmbeddedBroker.from_settings(settings)
    broker_started = await broker.start()
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "_" + secrets.token_hex(3)
    pg = EmbeddedPostgres(settings.data_dir)
    private = not await postgres_reachable(settings.dsn)
    redirect = private and not (await pg.status()).running  # a running one is someone's: keep its record
    server = await pg.start() if private else settings.dsn
    url = await _create_database(server, DEMO_DATABASE_PREFIX + run)
    if redirect:  # `billing totals` and friends follow the recorded URL: to the demo's data
        pg.url_file.write_text(url + "\n")
    demo = settings.model_copy(
        update={
            "charges_topic": f"demo-{run}-charges",
            "dlq_topic": f"demo-{run}-charges.dlq",
            "app_id": f"billing-demo-{run}",
        }
    )
    await ensure_topics(demo)
    console.print(
        "[bold]broker[/]",
        plain(f"{broker.address} ({'started' if broker_started else 'reused'})  "),
        "[bold]postgres[/]",
        plain(redact_url(url)),
    )

    log_path = Path(settings.data_dir) / f"demo-worker-{run}.log"
    env = {
        **os.environ,
        "BILLING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BILLING_DATABASE_URL": url,
        # A data dir of its own: no recorded dev Postgres URL can redirect it, no Faust state shared.
        "BILLING_DATA_DIR": str(Path(settings.data_dir) / f"demo-{run}"),
        "BILLING_CHARGES_TOPIC": demo.charges_topic,
        "BILLING_DLQ_TOPIC": demo.dlq_topic,
        "BILLING_APP_ID": demo.app_id,
        "BILLING_WEB_PORT": str(free_port()),
        # Close past days promptly: a day closes once everything produced by its end + grace is read.
        "BILLING_GRACE": "30s",
        "BILLING_FLUSH_INTERVAL": "1s",
        "BILLING_LOG_LEVEL": "WARNING",
    }
    worker = _spawn_worker(env, log_path)
    try:
        now = datetime.now(UTC)
        produced = list(synthetic_charges(charges, days=days, accounts=accounts, seed=seed, now=now))
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            sending = bar.add_task("producing charges", total=len(produced))
            async with ChargeProducer(demo) as producer:
                for i, charge in enumerate(produced, 1):
                    await producer.send(charge)
                    if i % 1000 == 0:
                        bar.update(sending, completed=i)
            bar.update(sending, completed=len(produced))
            metering = bar.add_task("metered into Postgres", total=len(produced))
            yesterday = (now - timedelta(days=1)).astimezone(demo.zone).date()
            deadline = time.monotonic() + 180
            while True:
                if worker.poll() is not None:
                    raise click.ClickException(f"the worker exited ({worker.returncode}); see {log_path}")
                counted, closed = await _progress(url, demo.charges_topic)
                bar.update(metering, completed=counted)
                if counted >= len(produced) and closed is not None and closed >= yesterday:
                    break
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"not done after 180 s ({counted} charges counted); see {log_path}"
                    )
                await asyncio.sleep(0.5)

        rows = await fetch_totals(url, TotalsQuery(group_by=("date", "provider")))
        render_table(rows, console)
        expected = _independent_fold(produced, demo.zone)
        exact = await _exact(url, expected)
        conn = await asyncpg.connect(url)
        try:
            final, provisional = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE finalized_at IS NOT NULL), count(*) FILTER (WHERE finalized_at IS NULL)"
                " FROM daily_billing_records"
            )
        finally:
            await conn.close()
        console.print(
            f"demo: {len(produced):,} charges -> {final + provisional:,} daily rows "
            f"({final:,} final, {provisional:,} provisional), "
            f"{'exact against what was produced' if exact else 'MISMATCH against what was produced'}, "
            f"in {time.monotonic() - started:.1f}s"
        )
        if not exact:
            raise click.ClickException("totals differ from what was produced")
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if broker_started:
            await broker.stop()
        for line in _closing_hint(
            url, "recorded" if redirect else "private" if private else "", broker_started
        ):
            console.print(plain(line))


def _closing_hint(url: str, server: str, broker_stopped: bool) -> list[str]:
    """Where the demo's data is now and what is gone: every line true after the demo ended.
    `server`: "recorded" (a private server it started), "private" (one already running), ""."""
    name = urlsplit(url).path.lstrip("/")
    lines = [f"the demo's rows stay in database {name} (nothing else was touched)."]
    if server == "recorded":  # a private server the demo started: commands follow its record
        lines.append(
            "query them: billing totals --group-by date,account   (a private Postgres, still running; "
            "`billing dev down` stops it)"
        )
    elif server == "private":  # someone's private server: its record (and its users) left alone
        lines.append(
            f"query them: psql {redact_url(url)}   (the private Postgres of BILLING_DATA_DIR, still running)"
        )
    else:
        lines.append(
            f"query them: BILLING_DATABASE_URL={redact_url(url)} billing totals --group-by date,account"
        )
    if broker_stopped:
        lines.append("the broker the demo started is stopped: its demo topics are gone.")
    lines.append(f"remove them: DROP DATABASE {name};")
    return lines


def _spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def _exact(url: str, expected: dict[tuple[Any, ...], tuple[int, int, int, int]]) -> bool:
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch("SELECT * FROM daily_billing_records")
    finally:
        await conn.close()
    actual = {
        (r["account_id"], r["user_id"], r["provider"], r["date"], r["charge_type"]): (
            r["prompt_tokens"],
            r["completion_tokens"],
            r["total_tokens"],
            r["charge_count"],
        )
        for r in records
    }
    return actual == expected


def _independent_fold(produced: list[Any], zone: Any) -> dict[tuple[Any, ...], tuple[int, int, int, int]]:
    """What the rows must hold, by plain arithmetic on what was produced: none of the worker's
    code (its date math, batching or rules) is used, so the demo checks it rather than itself."""
    seen: set[tuple[str, str]] = set()
    out: dict[tuple[Any, ...], list[int]] = {}
    for c in produced:
        if (c.account_id, c.event_id) in seen:
            continue
        seen.add((c.account_id, c.event_id))
        key = (c.account_id, c.user_id, c.provider, c.occurred_at.astimezone(zone).date(), c.charge_type)
        row = out.setdefault(key, [0, 0, 0, 0])
        row[0] += c.prompt_tokens
        row[1] += c.completion_tokens
        row[2] += c.prompt_tokens + c.completion_tokens
        row[3] += 1
    return {k: (a, b, t, n) for k, (a, b, t, n) in out.items()}


@click.command()
@click.option("--charges", default=20_000, show_default=True, help="How many synthetic charges to meter.")
@click.option("--days", default=3, show_default=True, help="Spread over this many days up to now.")
@click.option("--accounts", default=20, show_default=True, help="Accounts (Zipf-like sizes, 1-5 users each).")
@click.option("--seed", default=42, show_default=True, help="Same seed, same charges.")
def demo(charges: int, days: int, accounts: int, seed: int) -> None:
    """Run the main job once on this machine and print the daily totals.

    Starts the embedded broker and Postgres if needed (as `billing dev up`), creates a database
    of its own (billing_demo_<time>_<random>; it never drops one), runs a real worker, produces
    synthetic charges, waits until every charge is in Postgres and the past days are final,
    prints totals by date and provider with a one-line summary and says where the rows stay.
    """
    settings = read_settings()
    console = make_console()
    try:
        asyncio.run(_run(settings, charges, days, accounts, seed, console))
    except (OSError, asyncpg.PostgresError) as exc:
        raise click.ClickException(
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
