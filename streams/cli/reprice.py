"""`billing reprice`: recompute the cost of past days with the current price book.

A price was wrong, an account's negotiated price arrived late, a model was priced after its
charges were counted: correct the book (`billing prices set`), then reprice the days. It is a
rebuild (`streams.rebuild`): the days are recomputed from the charges topic by the sink's own
rules and the current book, and only rows whose values changed get `revision + 1` and a new
`updated_at`, so invoice exports see exactly those. `--dry-run` prints the difference per account
and changes nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from decimal import Decimal

import click
from rich.table import Table

from streams.cli import terminal
from streams.cli.common import load_settings, run_on_postgres
from streams.cli.rebuild import day_option, rebuild_days
from streams.cli.totals import money
from streams.ops.rebuild import RebuildResult
from streams.rules.pricing import nanos_to_units


def differences(result: RebuildResult) -> list[tuple[str, Decimal, Decimal]]:
    """(account, cost before, cost after) for every account whose cost in the range changed."""
    accounts = sorted(set(result.cost_before) | set(result.cost_after))
    out = []
    for account in accounts:
        before, after = result.cost_before.get(account, 0), result.cost_after.get(account, 0)
        if before != after:
            out.append((account, nanos_to_units(before), nanos_to_units(after)))
    return out


@click.command("reprice")
@day_option("--from", "first", "First day (YYYY-MM-DD).")
@day_option("--to", "last", "Last day, inclusive.")
@click.option("--dry-run", is_flag=True, help="Print the difference per account; change nothing.")
def reprice(first: datetime, last: datetime, dry_run: bool) -> None:
    """Recompute the cost of days [--from, --to] from the topic with the current price book."""
    settings = load_settings()
    result = run_on_postgres(
        settings, rebuild_days(settings, first.date(), last.date(), dry_run, sys.stderr.isatty())
    )
    changed = differences(result)
    if changed:
        table = Table(title="cost per account, " + ("would change" if dry_run else "changed"))
        for name in ("account", "before", "after", "difference"):
            table.add_column(name, justify="left" if name == "account" else "right", no_wrap=True)
        for account, before, after in changed:
            table.add_row(terminal.plain(account), money(before), money(after), money(after - before))
        terminal.console().print(table)
    span = f"{first.date()}..{last.date()}"
    verb = "would reprice" if dry_run else "repriced"
    click.echo(
        f"{verb} {span}: {len(changed)} accounts' cost changed, {result.updated + result.inserted + result.deleted} "
        f"rows {'would change' if dry_run else 'changed'}, {result.unchanged} unchanged"
        + (" (dry run: nothing changed)" if dry_run else "")
    )
