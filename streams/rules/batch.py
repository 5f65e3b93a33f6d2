"""What a worker gathers between two flushes: the accepted charges with where they were read.

A `Batch` keeps one `PendingCharge` per accepted charge with its source coordinates, because the
sink needs both per charge: the idempotency key for dedup and the offset for the source's fence.
The sums are made inside the flush transaction (`streams.rules.settle`), once the fences are read
under lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from zoneinfo import ZoneInfo

from schemas.charge import Charge
from streams.charge.windows import billing_date
from streams.rules.pending import PendingCharge, dedup_key
from streams.rules.pricing import normalize_model


@dataclass(slots=True)
class PartitionMark:
    """How far one partition got in this batch; records that only held bad input count too."""

    max_offset: int = -1
    max_event_time: datetime | None = None
    charges: int = 0
    first_record: str | None = None  # fingerprint of the record at offset 0, when in the batch


@dataclass(slots=True)
class RecordSource:
    """The bytes of one record, kept (by reference) for a dead letter decided at flush time."""

    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Batch:
    zone: ZoneInfo
    rows: list[PendingCharge] = field(default_factory=list)
    marks: dict[int, PartitionMark] = field(default_factory=dict)
    records: dict[tuple[int, int], RecordSource] = field(default_factory=dict)

    def add_record(
        self,
        partition: int,
        offset: int,
        charges: Iterable[Charge],
        positions: Iterable[int] | None = None,
        fingerprint: str | None = None,
        *,
        key: bytes | None = None,
        value: bytes = b"",
        accept_late: bool = False,
    ) -> bool:
        """Take the accepted charges of one Kafka record (possibly none) and their positions in it.

        Returns False, taking nothing, for a record this batch already holds: a partition is
        read in order, so an offset at or below the batch's highest one for the partition is a
        re-delivery (a seek back after a rebalance) and must not count twice.
        """
        zone = self.zone
        rows: list[PendingCharge] = []
        latest: datetime | None = None
        for position, c in zip(positions if positions is not None else count(), charges, strict=False):
            rows.append(
                PendingCharge(
                    dedup_key(c.account_id, c.event_id),
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
                    c.event_id,
                    accept_late,
                    normalize_model(c.model),
                    c.occurred_at,
                    c.cache_write_tokens,
                    c.reported_cost_nanos or 0,
                )
            )
            if latest is None or c.occurred_at > latest:
                latest = c.occurred_at
        return self.add_rows(partition, offset, rows, latest, fingerprint, key=key, value=value)

    def add_rows(
        self,
        partition: int,
        offset: int,
        rows: list[PendingCharge],
        latest: datetime | None,
        fingerprint: str | None = None,
        *,
        key: bytes | None = None,
        value: bytes = b"",
    ) -> bool:
        """Take the rows of one Kafka record, already built (`streams.rules.fast_decode`), and the
        latest `occurred_at` among them; the same rule for re-deliveries as `add_record`."""
        mark = self.marks.get(partition)
        if mark is None:
            mark = self.marks[partition] = PartitionMark()
        elif offset <= mark.max_offset:
            return False
        if offset == 0:
            mark.first_record = fingerprint
        mark.max_offset = offset
        self.records[(partition, offset)] = RecordSource(key, value)
        self.rows.extend(rows)
        mark.charges += len(rows)
        if latest is not None and (mark.max_event_time is None or latest > mark.max_event_time):
            mark.max_event_time = latest
        return True

    def without(self, refused: set[tuple[int, int, int]]) -> Batch:
        """The same batch less the charges at `refused` coordinates (partition, offset, position);
        their records still advance the fences, since their dead letters are durable."""
        out = Batch(self.zone, marks=self.marks, records=self.records)
        out.rows = [r for r in self.rows if (r.partition, r.offset, r.position) not in refused]
        return out

    def only(self, records: set[tuple[int, int]]) -> Batch:
        """The charges of some records only, with marks that reach just as far: to find which
        record of a batch Postgres refuses."""
        out = Batch(self.zone)
        for (partition, offset), source in self.records.items():
            if (partition, offset) in records:
                out.records[(partition, offset)] = source
                mark = out.marks.setdefault(partition, PartitionMark())
                mark.max_offset = max(mark.max_offset, offset)
                original = self.marks[partition]
                if offset == 0:
                    mark.first_record = original.first_record
        out.rows = [r for r in self.rows if (r.partition, r.offset) in records]
        for r in out.rows:
            out.marks[r.partition].charges += 1
        return out

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
        for where, source in self.records.items():
            out[lane[where[0]]].records[where] = source
        for row in self.rows:
            out[lane[row.partition]].rows.append(row)
        return out

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.marks


def record_fingerprint(key: bytes | None, value: bytes | None, timestamp: int | float | None) -> str:
    """Identifies one Kafka record across re-reads, so a recreated topic can be told apart."""
    digest = hashlib.sha256()
    for part in (key or b"", value or b"", str(timestamp).encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]
