"""`billing produce`: charges from JSON lines (a file or stdin) or synthetic ones, onto Kafka.

Input lines are validated here, before anything is sent, so that a typo is reported to the
person who made it (`line N: <reason>` on stderr, never the payload, which may hold customer
data) instead of surfacing later as a DLQ record. Valid lines are sent even when others are
rejected; the exit status then says 1, so scripts notice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import click
from pydantic import ValidationError

from schemas.charge import Charge
from streams.charge.decode import Limits, classify, decode_record
from streams.charge.json_input import load_json
from streams.cli import errors
from streams.cli.common import read_settings
from streams.config.settings import Settings
from streams.errors import JsonInputError
from streams.output_safety import escape_controls
from streams.producer.producer import ChargeProducer, encode_charge, to_charge
from streams.testing.synthetic import synthetic_charges

PROGRESS_THRESHOLD = 10_000  # below this a progress bar only flickers
_EOF = object()

EPILOG = """\b
Examples:
  billing produce charges.jsonl             send a file of JSON lines
  cat charges.jsonl | billing produce -     the same from stdin
  billing produce --synthetic 100000 --days 7 --accounts 50 --seed 1
  billing produce --synthetic 20000 --no-batch   one charge per record (slower; for comparison)

\b
A line is one JSON object, e.g.
  {"account_id": "acct-1", "user_id": "u-7", "provider": "openai", "charge_type": "completion",
   "prompt_tokens": 812, "completion_tokens": 97, "model": "gpt-4o-mini",
   "occurred_at": "2026-11-23T10:15:00Z", "event_id": "5b0c..."}
event_id and occurred_at are filled in when absent (a re-sent line then counts again: give
event_id to make re-sending safe). Blank lines are skipped.

\b
Exit status: 0 all sent; 1 some lines rejected (the valid ones were sent) or a delivery failed
after retries; 4 no broker answers. Kafka is BILLING_KAFKA_BOOTSTRAP (default 127.0.0.1:9092).
Lines are checked with the worker's rules (a line it would refuse is rejected here).
"""


class _LineFeed:
    """Lines read by a thread, so that a slow pipe never stalls the event loop (linger timers and
    delivery callbacks keep running while `tail -f ... | billing produce -` waits for input).

    The thread hands over whatever one read returned (read1: up to 64 KiB, never waiting for
    more), split into lines, which costs little per line and adds no delay on a slow pipe.
    """

    def __init__(self, stream: IO[bytes], max_chunks_ahead: int = 64) -> None:
        self._stream, self._chunks = stream, collections.deque[Any]()
        self._room = threading.Semaphore(max_chunks_ahead)  # bounds memory when Kafka is slower
        self._wakeup = asyncio.Event()
        self._waiting = False
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="billing-produce-reader", daemon=True).start()

    def _read(self) -> None:
        read = getattr(self._stream, "read1", self._stream.read)
        rest = b""
        try:
            while chunk := read(1 << 16):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                self._room.acquire()
                self._push(lines)
            if rest:
                self._push([rest])
        except BaseException as exc:  # handed to the event loop, which raises it
            self._push(exc)
        self._push(_EOF)

    def _push(self, item: object) -> None:
        self._chunks.append(item)
        if self._waiting:  # set before the consumer re-checks the deque, so no wakeup is lost
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                self._loop.call_soon_threadsafe(self._wakeup.set)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            while not self._chunks:
                self._wakeup.clear()
                self._waiting = True
                if not self._chunks:
                    await self._wakeup.wait()
                self._waiting = False
            item = self._chunks.popleft()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            self._room.release()
            for line in item:
                yield line


F = TypeVar("F", bound=Callable[..., Any])


def parse_line(raw: bytes, settings: Settings, now: datetime | None = None) -> Charge:
    """One input line -> a Charge, or ValueError `reason: detail` (no values). The worker's rules
    by the worker's code: bytes read by streams.charge.json_input, the record decoded by decode_record,
    so a charge it would refuse at decoding is refused here, never reported as produced."""
    try:
        data = load_json(raw)
    except JsonInputError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("not_an_object: a line must be one JSON object")
    try:
        charge = to_charge(data)
    except ValidationError as exc:
        reason, detail = classify(exc)
        raise ValueError(f"{reason}: {detail}") from None
    except ValueError as exc:  # no account/user and no profile resolver
        raise ValueError(f"missing_field: {str(exc).splitlines()[0]}") from None
    # The record will be stamped about now; too late is the sink's verdict, from the day closures.
    limits = Limits.for_record(now or datetime.now(UTC), settings.max_clock_skew, settings.zone)
    for refused in decode_record(encode_charge(charge), charge.account_id.encode(), limits).rejections:
        raise ValueError(f"{refused.reason}: {refused.detail}")
    return charge


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("producing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[charges]:,} charges"),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, console=Console(stderr=True), transient=True, disable=not enabled)


def _size(source: IO[bytes] | None) -> int | None:
    """Bytes in a regular file (the progress total); None for a pipe or a terminal."""
    try:
        return os.fstat(source.fileno()).st_size if source and not source.isatty() else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


async def _produce(
    settings: Settings,
    source: IO[bytes] | None,
    synthetic: tuple[int, int, int, int] | None,
    batch: bool,
    show_progress: bool | None,
) -> tuple[int, int, int, float]:
    """Returns (charges, records, rejected lines, seconds)."""
    started = time.perf_counter()
    rejected = 0
    total = synthetic[0] if synthetic else _size(source) or None  # charges, or bytes of a file
    if show_progress is None:
        big = total is not None and total >= (PROGRESS_THRESHOLD if synthetic else 1 << 20)
        show_progress = sys.stderr.isatty() and big
    async with ChargeProducer(settings, batch=batch) as producer:
        if settings.kafka_is_loopback:
            # The embedded broker (Tansu) would auto-create the topic with 4 partitions on our
            # first send; real clusters are left alone (topics there are an operator's call).
            from streams.kafka.topics import ensure_topics

            await ensure_topics(settings)  # no broker: BrokerUnreachableError, one line below
        with _progress(show_progress) as progress:
            task = progress.add_task("produce", total=total, charges=0)
            if synthetic is not None:
                n, days, accounts, seed = synthetic
                charges: Iterator[Charge] = synthetic_charges(n, days, accounts, seed)
                for i, charge in enumerate(charges, 1):
                    await producer.send(charge)
                    if i % 1000 == 0 or i == n:
                        progress.update(task, completed=i, charges=i)
            else:
                assert source is not None
                number = read = sent = 0
                async for line in _LineFeed(source):
                    number += 1
                    read += len(line) + 1
                    if not line.strip():
                        continue
                    try:
                        charge = parse_line(line, settings)
                    except ValueError as exc:
                        rejected += 1
                        why = escape_controls(f"line {number}: {exc}")  # names an input's field
                        progress.console.print(why, markup=False, highlight=False, soft_wrap=True)
                        continue
                    await producer.send(charge)
                    sent += 1
                    if sent % 1000 == 0:
                        progress.update(task, completed=read, charges=sent)
                progress.update(task, completed=read, charges=sent)
        await producer.flush()
        return producer.delivered_charges, producer.delivered_records, rejected, time.perf_counter() - started


def _synthetic(flag: str, kind: click.ParamType, default: int, help_text: str) -> Callable[[F], F]:
    """An option that shapes `--synthetic` charges."""
    return click.option(flag, type=kind, default=default, show_default=True, help=f"Synthetic: {help_text}.")


@click.command("produce", epilog=EPILOG)
@click.argument("source", required=False, type=click.File("rb", lazy=False), metavar="[FILE|-]")
@click.option(
    "--synthetic",
    type=click.IntRange(min=1),
    metavar="N",
    help="Generate N realistic charges instead of reading input.",
)
@_synthetic(
    "--days", click.IntRange(min=1), 7, "spread event times over the last D days (never in the future)"
)
@_synthetic("--accounts", click.IntRange(min=1), 50, "number of accounts (Zipf-like sizes, 1-5 users each)")
@_synthetic("--seed", click.INT, 0, "same seed, same charges and event_ids (a re-run is a re-send)")
@click.option(
    "--no-batch",
    is_flag=True,
    help="One charge per Kafka record instead of per-account batches (for comparison).",
)
@click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Progress bar on stderr [default: when stderr is a terminal and input is large].",
)
def produce(
    source: IO[bytes] | None,
    synthetic: int | None,
    days: int,
    accounts: int,
    seed: int,
    no_batch: bool,
    show_progress: bool | None,
) -> None:
    """Send charges to Kafka, from JSON lines (FILE, or - for stdin) or generated.

    Each line is validated first; a rejected line is reported on stderr as `line N: reason`
    and skipped. Charges are batched per account (one record holds up to 500 charges of one
    account) and every record's delivery is confirmed; a summary goes to stderr at the end.
    """
    if synthetic is not None and source is not None:
        raise click.UsageError("give FILE or --synthetic, not both")
    if synthetic is None and source is None:
        if sys.stdin.isatty():
            raise click.UsageError("give FILE, - (stdin) or --synthetic N")
        source = click.get_binary_stream("stdin")
    settings = read_settings()
    # aiokafka logs every refused connection at ERROR; the one-line error below says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    spec = (synthetic, days, accounts, seed) if synthetic is not None else None
    try:  # a delivery failure, a broker away or a topic of another size: one line (errors.run)
        charges, records, rejected, seconds = errors.run(
            _produce(settings, source, spec, not no_batch, show_progress), settings
        )
    except OSError as exc:
        raise click.ClickException(f"cannot read input: {exc.strerror or exc}") from exc
    rate = charges / seconds if seconds > 0 else 0.0
    click.echo(f"produced {charges} charges in {records} records ({rate:,.0f}/s)", err=True)
    if rejected:
        click.echo(f"rejected {rejected} lines", err=True)
        click.get_current_context().exit(1)
