"""`billing replay`: rewinding the workers' consumer group so they re-read charges, for operators.

Every refusal is one line on stderr and a non-zero exit, raised before anything is committed or
written: bad input, unknown partitions, offsets beyond the end, a future timestamp, live workers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from streams.cli.common import read_settings, run_on_postgres
from streams.cli.rebuild import rebuild
from streams.config.durations import parse_duration
from streams.config.settings import Settings
from streams.output_safety import escape_controls

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_AGO = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*(?:ago)?\s*$")

REPLAY_EPILOG = """\b
Examples:
  billing replay --from-timestamp 2026-11-20T06:00:00Z --dry-run   what would be re-read
  billing replay --from-timestamp 2026-11-20T06:00:00Z             rewind every partition
  billing replay --from-timestamp 6h                               six hours ago
  billing replay --to-offsets 0:1200,3:0                           two partitions, exactly
  billing replay --to-offsets all:earliest                         everything the topic keeps

\b
Stop the workers first, run this, then start them: they re-read from the new offsets. Charges
already in Postgres are skipped by the sink's fences and event_id dedup; rows that went missing
(a restored backup) get their charges back. A time without an offset is in BILLING_TIMEZONE.
It is checked against the records' own timestamps (brokers differ in how they answer), and a
partition is never moved past where the group stands (that would skip charges). Stopped workers
may stay listed in the group for BILLING_KAFKA_SESSION_TIMEOUT; replay waits that long, then
refuses while any is alive. --force commits at once without waiting; the broker still refuses
while the group has live members. Exit status: 0 done (or nothing to do), 1 refused, 4 no answer.
"""


def parse_timestamp(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """ISO 8601 (`2026-11-20T10:00:00Z`), a date (its midnight) or a duration ago (`6h`).
    A time without an offset is read in BILLING_TIMEZONE, never in the machine's local time."""
    raw = text.strip()
    if _AGO.match(raw):
        return now - parse_duration(raw.removesuffix("ago").strip())
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(0), tzinfo=zone)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad timestamp {text!r}: use e.g. 2026-11-20T10:00:00Z, 2026-11-20 or 6h") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


@click.command(epilog=REPLAY_EPILOG)
@click.option(
    "--from-timestamp", "from_timestamp", metavar="TIME", help="Rewind to the first record at/after TIME."
)
@click.option("--to-offsets", "to_offsets", metavar="P:O[,P:O]", help="Rewind partitions to exact offsets.")
@click.option("--dry-run", is_flag=True, help="Show current/new offsets and records between; change nothing.")
@click.option("--force", is_flag=True, help="Do not wait for listed members to leave; commit at once.")
def replay(from_timestamp: str | None, to_offsets: str | None, dry_run: bool, force: bool) -> None:
    """Rewind the workers' consumer group so they re-read charges (idempotent)."""
    if (from_timestamp is None) == (to_offsets is None):
        raise click.UsageError("give exactly one of --from-timestamp or --to-offsets")
    settings = read_settings()
    run_on_postgres(settings, _replay(settings, from_timestamp, to_offsets, dry_run, force))


async def _replay(
    settings: Settings, stamp: str | None, offsets: str | None, dry_run: bool, force: bool
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka.client import aiokafka_options
    from streams.ops import replay as rp

    now = datetime.now(UTC)
    target = parse_timestamp(stamp, settings.zone, now) if stamp else None
    if target is not None and target > now:
        raise ValueError(
            f"timestamp {target.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})"
        )
    spec = rp.parse_offsets(offsets) if offsets else None
    group, topic = settings.app_id, settings.charges_topic
    async with rp.TopicInspector(settings) as inspector:
        wanted = rp.expand_offsets(spec, inspector.partitions) if spec is not None else None
        bounds = await inspector.bounds()
        admin = AIOKafkaAdminClient(**aiokafka_options(settings), request_timeout_ms=10_000)
        await admin.start()
        try:
            committed = await rp.committed_offsets(admin, group, topic, inspector.partitions)
            members = await rp.group_members(admin, group)
        finally:
            await admin.close()
        plans = {p: rp.PartitionPlan(p, *bounds[p], committed[p]) for p in (wanted or inspector.partitions)}
        if target is not None:
            await inspector.resolve(int(target.timestamp() * 1000), plans)
        _settle(plans, wanted)
        moved = [(p, pl.new) for p, pl in plans.items() if pl.new is not None and pl.position > pl.new]
        oldest = min([await inspector.timestamp_at(p, o) for p, o in moved], default=None)
    if oldest is not None and oldest / 1000 < (now - settings.dedup_horizon).timestamp():
        click.echo(
            f"warning: this re-reads records older than BILLING_DEDUP_HORIZON ({settings.dedup_horizon}); "
            "a re-sent charge whose first copy is older than that is no longer recognised and may count again",
            err=True,
        )
    what = f"from {target.isoformat()}" if target else f"to offsets {offsets}"
    click.echo(f"replay of topic {topic} for consumer group {group} {what}{' (dry run)' if dry_run else ''}")
    if dry_run:
        ranges = {
            p: (min(pl.new or 0, pl.position), max(pl.new or 0, pl.position)) for p, pl in plans.items()
        }
        counts = await count_between(settings, ranges)
        for p, plan in plans.items():
            plan.records_between = counts[p]
    _print_plans(list(plans.values()))
    changes = {p: plan.new for p, plan in plans.items() if plan.new is not None and plan.new != plan.position}
    if dry_run:
        if members:
            listed = escape_controls(", ".join(members))  # client ids: whatever the clients sent
            click.echo(f"listed members of the group: {listed} (a real run refuses live ones)")
        return
    if not changes:
        click.echo("nothing to rewind: the group already stands there")
        return
    note = f"billing replay {what} at {now.isoformat(timespec='seconds')}"
    await rp.rewind_group(settings, changes, force=force, note=note)
    click.echo(f"rewound {len(changes)} partition(s); start the workers to re-read from there")


def _settle(plans: dict[int, Any], wanted: dict[int, int | None] | None) -> None:
    """Fill in and check the new offsets; every problem is named, and nothing has changed yet."""
    problems = []
    for p, plan in plans.items():
        if wanted is not None:
            plan.new = plan.start if wanted[p] is None else wanted[p]
            plan.how = "offsets"
            if plan.new > plan.end:
                problems.append(f"partition {p}: offset {plan.new} is beyond the end ({plan.end})")
            elif plan.new < plan.start:
                problems.append(
                    f"partition {p}: offset {plan.new} is before the first kept offset {plan.start}"
                )
            elif plan.new > plan.position:
                problems.append(
                    f"partition {p}: {plan.new} is ahead of the group's position {plan.position}; "
                    f"that would skip {plan.new - plan.position} offsets of uncounted charges"
                )
        elif plan.new is not None and plan.new > plan.position:
            plan.new, plan.how = plan.position, "kept"  # the group has not got that far yet
    if problems:
        raise ValueError("; ".join(problems) + "; nothing changed")


async def count_between(settings: Settings, ranges: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """Records in [lo, hi) per partition, counted by reading (offsets can have gaps)."""
    from streams.kafka.topic_reader import read_topic

    wanted = {p: r for p, r in ranges.items() if r[0] < r[1]}
    counts = dict.fromkeys(ranges, 0)
    if not wanted:
        return counts
    start = {p: lo for p, (lo, _) in wanted.items()}
    stop = {p: hi for p, (_, hi) in wanted.items()}
    async for batch in read_topic(
        settings, settings.charges_topic, start, stop, partitions=wanted, settle=0.5
    ):
        for record in batch:
            counts[record.partition] += 1
    return counts


def _print_plans(plans: list[Any]) -> None:
    rows = [("partition", "committed", "new", "records between", "found by")]
    for plan in plans:
        committed = "none" if plan.committed is None else str(plan.committed)
        between = "" if plan.records_between is None else str(plan.records_between)
        rows.append((str(plan.partition), committed, str(plan.new), between, plan.how))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.group()
def _standalone() -> None:
    """`python -m streams.cli.replay replay|rebuild ...`: the two commands without the rest of
    `billing`, as the tests run them."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


_standalone.add_command(replay)
_standalone.add_command(rebuild)

if __name__ == "__main__":
    _standalone()
