"""What a worker gathers between two flushes, and the pure fold of charges into daily totals.

A `Batch` keeps one row per accepted charge with its source coordinates, because the sink
needs both per charge: the event_id for dedup and the offset for the per-key fence. The sums are
made inside the flush transaction (`streams.settle`), once the fences have been read under lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import count
from zoneinfo import ZoneInfo

from schemas.charge import Charge
from streams.windows import billing_date

DailyKey = tuple[str, str, str, date, str]  # account_id, user_id, provider, date, charge_type

# Column order of the rows a Batch hands to the sink (and to streams.settle).
PENDING_COLUMNS = (
    "event_id",
    "partition",
    "offset",
    "position",
    "account_id",
    "user_id",
    "provider",
    "date",
    "charge_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
PendingRow = tuple[str, int, int, int, str, str, str, date, str, int, int, int, int, int]


@dataclass(slots=True)
class PartitionMark:
    """How far one partition got in this batch; records that only held bad input count too."""

    max_offset: int = -1
    max_event_time: datetime | None = None
    charges: int = 0
    first_record: str | None = None  # fingerprint of the record at offset 0, when in the batch


@dataclass(slots=True)
class Batch:
    zone: ZoneInfo
    rows: list[PendingRow] = field(default_factory=list)
    marks: dict[int, PartitionMark] = field(default_factory=dict)

    def add_record(
        self,
        partition: int,
        offset: int,
        charges: Iterable[Charge],
        positions: Iterable[int] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Take the accepted charges of one Kafka record (possibly none) and their positions in it."""
        mark = self.marks.get(partition)
        if mark is None:
            mark = self.marks[partition] = PartitionMark()
        if offset == 0:
            mark.first_record = fingerprint
        if offset > mark.max_offset:
            mark.max_offset = offset
        zone = self.zone
        append = self.rows.append
        for position, c in zip(positions if positions is not None else count(), charges, strict=False):
            append(
                (
                    c.event_id,
                    partition,
                    offset,
                    position,
                    c.account_id,
                    c.user_id,
                    c.provider,
                    billing_date(c.occurred_at, zone),
                    c.charge_type,
                    c.prompt_tokens,
                    c.completion_tokens,
                    c.total,
                    c.cached_tokens,
                    c.reasoning_tokens,
                )
            )
            mark.charges += 1
            if mark.max_event_time is None or c.occurred_at > mark.max_event_time:
                mark.max_event_time = c.occurred_at

    def split(self, parts: int) -> list[Batch]:
        """At most `parts` batches of whole partitions, balanced by charges: partitions are
        independent in the sink (own locks, own fences), so the parts can commit concurrently."""
        if parts <= 1 or len(self.marks) <= 1:
            return [self]
        loads = [0] * min(parts, len(self.marks))
        lane: dict[int, int] = {}
        for partition, mark in sorted(self.marks.items(), key=lambda pm: (-pm[1].charges, pm[0])):
            lane[partition] = i = loads.index(min(loads))
            loads[i] += mark.charges + 1
        out = [Batch(self.zone) for _ in loads]
        for partition, mark in self.marks.items():
            out[lane[partition]].marks[partition] = mark
        for row in self.rows:
            out[lane[row[1]]].rows.append(row)
        return out

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.marks


@dataclass(slots=True)
class Totals:
    """The summable part of a daily billing record."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    charge_count: int = 0

    def add(self, charge: Charge) -> None:
        self.prompt_tokens += charge.prompt_tokens
        self.completion_tokens += charge.completion_tokens
        self.total_tokens += charge.total
        self.cached_tokens += charge.cached_tokens
        self.reasoning_tokens += charge.reasoning_tokens
        self.charge_count += 1


def daily_key(charge: Charge, zone: ZoneInfo) -> DailyKey:
    """The tumbling-window key: the billing date is part of the key."""
    return (
        charge.account_id,
        charge.user_id,
        charge.provider,
        billing_date(charge.occurred_at, zone),
        charge.charge_type,
    )


def fold(charges: Iterable[Charge], zone: ZoneInfo) -> dict[DailyKey, Totals]:
    """Daily totals of distinct charges (first event_id wins), e.g. for `billing rebuild`."""
    seen: set[str] = set()
    out: dict[DailyKey, Totals] = {}
    for charge in charges:
        if charge.event_id in seen:
            continue
        seen.add(charge.event_id)
        key = daily_key(charge, zone)
        totals = out.get(key)
        if totals is None:
            totals = out[key] = Totals()
        totals.add(charge)
    return out


def record_fingerprint(key: bytes | None, value: bytes | None, timestamp: int | None) -> str:
    """Identifies one Kafka record across re-reads, so a recreated topic can be told apart."""
    digest = hashlib.sha256()
    for part in (key or b"", value or b"", str(timestamp).encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]
