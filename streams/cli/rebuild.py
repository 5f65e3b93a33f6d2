"""`billing rebuild`: recompute billing days from the charges topic and replace their rows.

Every refusal is one line on stderr and a non-zero exit, raised before anything is written: a
range the wrong way round, rows holding charges the topic no longer has (named, with the
`--drop-source` that would drop them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

import click

from streams.cli.common import load_settings, run_on_postgres
from streams.config.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

REBUILD_EPILOG = """\b
Examples:
  billing rebuild --from 2026-11-20 --to 2026-11-20           one billing day
  billing rebuild --from 2026-11-01 --to 2026-11-30 --dry-run what would change

\b
Reads the whole charges topic, recomputes those days (BILLING_TIMEZONE) and replaces exactly
their rows in one transaction; rows of other days are never touched. Safe while workers run:
they wait a moment on the partition locks, then continue after the rebuilt charges.
"""


def day_option(flag: str, dest: str, help_text: str) -> Callable[[F], F]:
    """A required YYYY-MM-DD option of `rebuild` and `reprice`."""
    return click.option(
        flag, dest, required=True, metavar="DATE", type=click.DateTime(["%Y-%m-%d"]), help=help_text
    )


@click.command(epilog=REBUILD_EPILOG)
@day_option("--from", "first", "First day (YYYY-MM-DD).")
@day_option("--to", "last", "Last day, inclusive.")
@click.option("--dry-run", is_flag=True, help="Compute and report the changes, then roll back.")
@click.option(
    "--drop-source",
    "drop_sources",
    multiple=True,
    type=int,
    metavar="ID",
    help="Drop the charges of this source (named by a refusal: a topic before a cut-over, or a "
    "partition before the broker came back empty) from the rebuilt rows. Repeat for each.",
)
@click.option(
    "--progress/--no-progress", "show_progress", default=None, help="Progress bar (default: on a tty)."
)
def rebuild(
    first: datetime, last: datetime, dry_run: bool, drop_sources: tuple[int, ...], show_progress: bool | None
) -> None:
    """Recompute billing days from the charges topic and replace exactly their rows.

    Refuses, changing nothing, when rows of the range hold charges the topic no longer has
    (it names the sources and their offsets); --drop-source says exactly what to drop.
    """
    settings = load_settings()
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    result = run_on_postgres(
        settings, rebuild_days(settings, first.date(), last.date(), dry_run, show_progress, drop_sources)
    )
    span = f"{first.date()}..{last.date()}" if first != last else str(first.date())
    click.echo(
        f"rebuilt {span} from {result.records:,} records ({result.charges:,} charges in range): "
        f"{result.inserted} inserted, {result.updated} updated, {result.deleted} deleted, "
        f"{result.unchanged} unchanged{' (dry run: rolled back)' if dry_run else ''}"
    )


async def rebuild_days(
    settings: Settings,
    first: date,
    last: date,
    dry_run: bool,
    show_progress: bool,
    drop: tuple[int, ...] = (),
) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.ops.rebuild import rebuild as run_rebuild
    from streams.ops.replay import TopicInspector

    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    async with TopicInspector(settings) as inspector:
        tps = [inspector.tp(p) for p in inspector.partitions]
        starts = await inspector.consumer.beginning_offsets(tps)
        ends = await inspector.consumer.end_offsets(tps)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), disable=not show_progress) as bar:
        tasks = {
            tp.partition: bar.add_task(
                f"partition {tp.partition} records", total=max(ends[tp] - starts[tp], 1)
            )
            for tp in tps
        }

        def advance(partition: int, records: int) -> None:
            task = tasks.get(partition)
            if task is None:
                return
            total = bar.tasks[task].total or 0
            bar.update(task, completed=records, total=max(total, records))  # Tansu under-reports ends

        return await run_rebuild(settings, first, last, progress=advance, dry_run=dry_run, drop_sources=drop)
