"""`billing dlq`: count, show, re-drive, skip and resolve the records the worker refused.

The work itself is `streams.ops.dlq`; this module turns it into commands and tables.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any, TypeVar

import click
from rich.table import Column, Table

from streams.charge import dead_letter as envelope
from streams.charge.dead_letter import DeadLetter
from streams.cli import errors
from streams.cli.common import read_settings
from streams.cli.terminal import console, echo_data, plain
from streams.config.settings import Settings
from streams.ops.dlq import (
    CURABLE,
    count_states,
    eligible,
    mark,
    mark_redriven,
    redrive_key,
    scan,
    select,
    send,
    where,
)
from streams.ops.dlq import skip as skip_record
from streams.output_safety import escape_controls

T = TypeVar("T")


def run(settings: Settings, work: Coroutine[Any, Any, T], hint: str = "") -> T:
    """`errors.run` against the broker; an absent topic names the settings to check."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # it logs each refused connect
    try:
        return errors.run(work, settings, network="kafka", hint=hint)
    except LookupError as exc:
        if type(exc) is not LookupError:  # KeyError/IndexError are bugs, not a missing topic
            raise
        raise click.ClickException(f"{exc} (check BILLING_*_TOPIC; `billing dev up` creates them)") from None


def as_text(payload: bytes) -> str | None:
    """The payload as text when it is valid UTF-8 (charges are JSON), else None."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def preview(payload: bytes, width: int = 60) -> str:
    """A short, single-line, printable view (no terminal control characters from the payload)."""
    text = as_text(payload)
    if text is None:
        return f"<{len(payload)} bytes, not UTF-8>"
    flat = "".join(c if c.isprintable() else " " for c in " ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def as_json(letter: DeadLetter) -> dict[str, Any]:
    """One record for `show --format jsonl`: payload as text when it is UTF-8, else base64."""
    body = {k: v for k, v in asdict(letter).items() if k != "payload"}
    text = as_text(letter.payload)
    if text is None:
        return body | {"payload_b64": base64.b64encode(letter.payload).decode("ascii")}
    return body | {"payload": text}


def print_letters(letters: list[DeadLetter], title: str | None = None) -> None:
    """A table of letters, every cell literal text (no markup, controls escaped): they are hostile."""
    nowrap = (Column("coordinates", no_wrap=True), Column("reason", no_wrap=True))
    table = Table(*nowrap, "detail", "key", "payload", title=title and plain(title))
    for x in letters:
        cells = (where(x), x.reason, x.detail, x.key or "-", preview(x.payload))
        table.add_row(*(plain(c, overflow="fold") for c in cells))
    console().print(table)


_FILTERS = (
    click.option("--reason", "reasons", multiple=True, metavar="R", help="Only this reason (repeatable)."),
    click.option("--partition", type=click.IntRange(min=0), help="Only this source partition."),
    click.option("--offset", type=click.IntRange(min=0), help="Only this source offset."),
)


def filters(command: Callable[..., None]) -> Callable[..., None]:
    """The selection options `show` and `redrive` share (they arrive as select()'s keywords)."""
    return functools.reduce(lambda cmd, option: option(cmd), reversed(_FILTERS), command)


@click.group("dlq")
def dlq() -> None:
    """Dead-letter records: what the worker refused, why, and where it came from.

    Coordinates are the refused input's (topic, partition, offset, index in a batch). The worker
    may write the same refusal twice (at-least-once, replays); such copies are counted, shown and
    re-driven once. Reads BILLING_DLQ_TOPIC; re-drives to BILLING_CHARGES_TOPIC.
    """


@dlq.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_(fmt: str) -> None:
    """Count refused records by reason (copies with the same coordinates count once).

    \b
    Examples:
      billing dlq list
      billing dlq list --format json
    """
    settings = read_settings()
    found = run(settings, scan(settings))
    counts, total = Counter(x.reason for x in found.letters), len(found.letters)
    dups = sum(found.copies.values()) - total
    by_state = run(settings, count_states(settings, found.letters))
    if fmt == "json":
        body = {"topic": settings.dlq_topic, "records": total, "by_reason": dict(sorted(counts.items()))}
        click.echo(
            json.dumps(body | {"duplicates": dups, "unreadable": found.unreadable, "by_state": by_state})
        )
        return
    heading = plain(f"{settings.dlq_topic} by reason")
    table = Table("reason", Column("records", justify="right"), title=heading)
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(plain(reason), f"{n:,}")
    table.add_row("total", f"{total:,}", style="bold")
    console().print(table)
    if by_state is None:
        click.echo("(open, redriven and resolved are not known: Postgres does not answer)")
    else:
        click.echo(", ".join(f"{n:,} {state}" for state, n in by_state.items()))
    if dups or found.unreadable:
        click.echo(f"({dups} duplicate copies counted once, {found.unreadable} unreadable)")


@dlq.command("show")
@filters
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="0 = all.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@click.option("--payload-only", is_flag=True, help="Print only the payloads, one per line.")
def show(limit: int, fmt: str, payload_only: bool, **selection: Any) -> None:
    """Show refused records: coordinates, reason, detail, key and payload.

    jsonl gives the payload as text when it is UTF-8, else base64 in payload_b64. --payload-only
    prints what `billing produce FILE` reads, so a fixed payload can be sent again.

    \b
    Examples:
      billing dlq show --reason total_mismatch
      billing dlq show --partition 3 --offset 1042 --format jsonl
      billing dlq show --reason invalid_json --limit 0 --payload-only > fix.jsonl
      # edit fix.jsonl, then: billing produce fix.jsonl
    """
    settings = read_settings()
    found = select(run(settings, scan(settings)).letters, **selection)
    shown = found[:limit] if limit else found
    for x in shown if payload_only or fmt == "jsonl" else ():
        line = as_text(x.payload) if payload_only else json.dumps(as_json(x), ensure_ascii=False)
        if line is None or "\n" in line:  # `billing produce` reads lines: print only what it can read
            click.echo(f"skipped {where(x)}: not one line of text (see --format jsonl)", err=True)
        else:
            echo_data(line)
    if fmt == "table" and not payload_only:
        print_letters(shown) if shown else click.echo("No dead letters match.")
    if len(shown) < len(found):
        click.echo(f"showing {len(shown)} of {len(found)} (use --limit 0 for all)", err=True)


@dlq.command("redrive")
@filters
@click.option("--all", "all_", is_flag=True, help="Every open record in the DLQ.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@click.option(
    "--waive",
    type=click.Choice(sorted(envelope.WAIVABLE)),
    multiple=True,
    help="Lift this rule for the records sent (travels with them: a replay or rebuild agrees).",
)
def redrive(all_: bool, dry_run: bool, waive: tuple[str, ...], **selection: Any) -> None:
    """Send selected records' payloads back to the charges topic, unchanged, with their key.

    Each letter is sent at most once (its state becomes `redriven`), and only while it is younger
    than BILLING_DEDUP_HORIZON, so a charge can never bill twice: within the horizon the worker's
    dedup counts an already counted charge once; past it, the dedup may have forgotten, so such
    letters are refused (check the rows, then `billing dlq resolve` them). A record without a key
    gets its payload's account_id; with neither it is skipped and reported (exit status 1).
    Payloads refused for their content (invalid_json, total_mismatch...) are refused again as they
    are: fix them with `billing dlq show --payload-only` and `billing produce FILE`.

    \b
    Examples:
      billing dlq redrive --reason future_timestamp --waive future_timestamp --dry-run
      billing dlq redrive --reason too_late --waive too_late
      billing dlq redrive --partition 3 --offset 1042
      billing dlq redrive --all
    """
    chosen_filters = [k for k, v in selection.items() if v not in (None, ())]
    if all_ and chosen_filters:
        raise click.UsageError("--all selects everything: do not combine it with other filters")
    if selection["offset"] is not None and selection["partition"] is None:
        raise click.UsageError("--offset needs --partition (offsets are per partition)")
    if not (all_ or chosen_filters):
        raise click.UsageError("select records with --reason, --partition [--offset] or --all")
    settings = read_settings()
    found = run(settings, scan(settings))
    selected = select(found.letters, **selection)
    chosen, held = run(settings, eligible(settings, selected))
    for x, why in held:
        click.echo(f"skipped {where(x)}: {why}", err=True)
    pairs = [(x, redrive_key(x)) for x in chosen]
    keyed, keyless = [(x, k) for x, k in pairs if k is not None], [x for x, k in pairs if k is None]
    for x in keyless:
        click.echo(f"skipped {where(x)}: no key and no account_id in the payload", err=True)
    if stuck := Counter(x.reason for x, _ in keyed if x.reason not in CURABLE):
        listed = escape_controls(", ".join(f"{r}: {n}" for r, n in sorted(stuck.items())))
        click.echo(f"note: refused for their content, these will be refused again ({listed})", err=True)
    if dry_run and keyed:
        print_letters([x for x, _ in keyed], title=f"would send to {settings.charges_topic}")
    elif keyed:
        run(
            settings,
            send(settings, keyed, waive),
            hint=" (some may have been sent: they are still open, and a redrive within the dedup horizon is safe)",
        )
        run(settings, mark_redriven(settings, [x for x, _ in keyed]))
    verb = "dry run: would redrive" if dry_run else "redrove"
    dups = sum(found.copies[x.coordinates] - 1 for x in selected)
    head = f"{verb} {len(keyed)} of {len(selected)} selected records to {settings.charges_topic}"
    click.echo(f"{head} (duplicate copies ignored: {dups}, skipped without a key: {len(keyless)})")
    if keyless:
        click.get_current_context().exit(1)


_COORDINATES = re.compile(r"^(?P<topic>.+):(?P<partition>\d+):(?P<offset>\d+)$")


@dlq.command("skip")
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

    if not asyncio.run(skip_record(settings, topic, partition, offset)):
        raise click.ClickException(f"{where} was applied already: nothing to skip")
    click.echo(f"{where} will be dead-lettered as `skipped` when a worker reaches it")


@dlq.command("resolve")
@click.option("--partition", type=int, required=True, help="Source partition of the refused record.")
@click.option("--offset", type=int, required=True, help="Its offset.")
@click.option("--index", type=int, default=None, help="The element of a batch record.")
def resolve(partition: int, offset: int, index: int | None) -> None:
    """Mark a letter resolved (handled by hand): `dlq list` stops counting it, redrive skips it."""
    settings = read_settings()
    letter = DeadLetter("resolved", "", settings.charges_topic, partition, offset, index, None, b"", "")
    asyncio.run(mark(settings, [letter], "resolved"))
    click.echo(f"{where(letter)} resolved")
