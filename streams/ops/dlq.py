"""`billing dlq skip` and `billing dlq resolve`, and the state checks of a redrive.

Kept apart from `streams.cli.dlq` (reading and showing letters): these are the commands that
change what the workers and the next redrive do, through Postgres.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import click

from streams.charge.dead_letter import DeadLetter
from streams.cli.common import read_settings
from streams.config.settings import Settings
from streams.sink import dead_letters

_COORDINATES = re.compile(r"^(?P<topic>.+):(?P<partition>\d+):(?P<offset>\d+)$")


async def eligible(settings: Settings, letters: list[DeadLetter]) -> list[DeadLetter]:
    """The letters a redrive may send: open, complete, and younger than the dedup horizon."""
    conn = await asyncpg.connect(settings.dsn, timeout=10)
    try:
        known = await dead_letters.states(conn, letters)
    finally:
        await conn.close()
    out = []
    for x in letters:
        state = known.get(dead_letters.coordinates(x))
        if state is not None:
            click.echo(f"skipped {_where(x)}: already {state}", err=True)
        elif x.truncated:
            click.echo(
                f"skipped {_where(x)}: its payload was truncated; redrive it from the charges topic", err=True
            )
        elif dead_letters.older_than(x, settings.dedup_horizon):
            click.echo(
                f"skipped {_where(x)}: refused longer ago than BILLING_DEDUP_HORIZON, so its charge may "
                "have counted since; check the rows, then `billing dlq resolve` it",
                err=True,
            )
        else:
            out.append(x)
    return out


async def count_states(settings: Settings, letters: list[DeadLetter]) -> dict[str, int] | None:
    """How many letters are open, redriven and resolved; None when Postgres cannot say (the
    counts by reason come from the DLQ topic alone and are still worth showing)."""
    try:
        conn = await asyncpg.connect(settings.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        known = await dead_letters.states(conn, letters)
    except asyncpg.UndefinedTableError:  # not migrated yet: no letter was ever redriven
        known = {}
    finally:
        await conn.close()
    out = {"open": 0, "redriven": 0, "resolved": 0}
    for x in letters:
        out[known.get(dead_letters.coordinates(x), "open")] += 1
    return out


async def mark_redriven(settings: Settings, letters: list[DeadLetter]) -> None:
    await _mark(settings, letters, "redriven")


async def _mark(settings: Settings, letters: list[DeadLetter], state: str) -> None:
    conn = await asyncpg.connect(settings.dsn, timeout=10)
    try:
        await dead_letters.mark(conn, letters, state)
    finally:
        await conn.close()


def _where(x: DeadLetter) -> str:
    return f"{x.topic}[{x.partition}]@{x.offset}" + ("" if x.index is None else f"#{x.index}")


@click.command("skip")
@click.argument("where", metavar="TOPIC:PARTITION:OFFSET")
def skip(where: str) -> None:
    """Dead-letter one record without reading it (reason `skipped`).

    For a record that must not be billed as it is. The workers pick the skip up within
    BILLING_FLUSH_INTERVAL; everything else stays exact. A record already applied is not skipped.

    \b
    Example:
      billing dlq skip charges:3:1042
    """
    match = _COORDINATES.match(where)
    if match is None:
        raise click.UsageError(f"expected TOPIC:PARTITION:OFFSET, got {where!r}")
    settings = read_settings()
    topic, partition, offset = match["topic"], int(match["partition"]), int(match["offset"])

    async def work() -> bool:
        conn = await asyncpg.connect(settings.dsn, timeout=10)
        try:
            return await dead_letters.skip(conn, topic, partition, offset)
        finally:
            await conn.close()

    if not asyncio.run(work()):
        raise click.ClickException(f"{where} was applied already: nothing to skip")
    click.echo(f"{where} will be dead-lettered as `skipped` when a worker reaches it")


@click.command("resolve")
@click.option("--partition", type=int, required=True, help="Source partition of the refused record.")
@click.option("--offset", type=int, required=True, help="Its offset.")
@click.option("--index", type=int, default=None, help="The element of a batch record.")
def resolve(partition: int, offset: int, index: int | None) -> None:
    """Mark a letter resolved (handled by hand): `dlq list` stops counting it, redrive skips it."""
    settings = read_settings()
    letter = DeadLetter("resolved", "", settings.charges_topic, partition, offset, index, None, b"", "")
    asyncio.run(_mark(settings, [letter], "resolved"))
    click.echo(f"{_where(letter)} resolved")
