"""Where a worker's time goes: its two halves measured alone, in this process, on the same records.

- decode: `streams.rules.fast_decode.add_to_batch` over the e2e records (the bytes the producer sent),
  i.e. JSON, validation and the pending rows, with no Kafka and no Faust; and, on the same records
  in the same run, the model path alone (`decode_record` + `Batch.add_record`, every charge a
  pydantic model) that the worker falls back to, so the ratio between the two is the fast
  path's gain whatever else the machine is doing;
- sink: `PostgresSink.flush` of those batches, 2,000 records each as the worker takes them
  (BILLING_BATCH_RECORDS), into a fresh database with the default price book: the dedup,
  pricing, the fenced upserts of the daily rows and the rows by model, one transaction.
The worker runs them one after the other for each batch, so 1 / (1/decode + 1/sink) is what it
could reach if Faust delivered records for free; the gap to the e2e figure is Faust's per-record
machinery and the waiting between batches.
"""

from __future__ import annotations

import contextlib
import gc
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench.infra import Bench, CpuMeter
from streams.charge.decode import Limits, decode_record
from streams.config.settings import Settings
from streams.ops.prices import seed_defaults
from streams.rules.batch import Batch
from streams.rules.fast_decode import add_to_batch
from streams.rules.pending import PendingCharge
from streams.sink.postgres import PostgresSink
from streams.worker.memory import settle_heap
from tests.support import settings_from


@dataclass
class Components:
    charges: int
    records: int
    decode_seconds: float
    sink_seconds: float
    pending: list[PendingCharge]  # what the batches held, for the pricing measurement
    model_decode_rate: float = 0.0  # charges/s of decode_record + add_record, best of the rounds
    fast_decode_rate: float = 0.0  # charges/s of add_to_batch, best of the rounds, interleaved
    postgres_cpu: float = 0.0  # CPU-seconds of the Postgres server during the flushes
    wal_bytes: int = 0  # write-ahead log the flushes wrote: what the disk takes per charge

    @property
    def postgres_core_rate(self) -> float:
        """Charges per Postgres CPU-second: what one Postgres core sustains for this sink."""
        return self.charges / self.postgres_cpu if self.postgres_cpu else 0.0

    @property
    def decode_rate(self) -> float:
        return self.charges / self.decode_seconds

    @property
    def sink_rate(self) -> float:
        return self.charges / self.sink_seconds

    @property
    def serial_rate(self) -> float:
        return self.charges / (self.decode_seconds + self.sink_seconds)


def decode_batch(
    records: list[tuple[bytes, bytes]], settings: Settings, limits: Limits, start: int, stop: int, fast: bool
) -> Batch:
    """One batch of records decoded as the worker does (`fast`) or through the model alone."""
    batch = Batch(settings.zone)
    for offset in range(start, stop):
        key, value = records[offset]
        # offsets grow within each partition, as a topic's do: the fences are per partition
        partition = zlib.crc32(key) % settings.partitions
        if fast:
            add_to_batch(batch, partition, offset, key, value, limits)
        else:
            decoded = decode_record(value, key, limits)
            batch.add_record(partition, offset, decoded.charges, decoded.positions)
    return batch


def decode_rates(
    records: list[tuple[bytes, bytes]], settings: Settings, limits: Limits, rounds: int = 3
) -> tuple[float, float]:
    """(fast, model) charges/s on the same records, best of `rounds` interleaved passes each, so
    that both see the same machine; the rows of both must be equal, or the figure is void."""
    best = {True: 0.0, False: 0.0}
    for _ in range(rounds):
        rows = {}
        for fast in (True, False):
            began = time.perf_counter()
            batch = decode_batch(records, settings, limits, 0, len(records), fast)
            best[fast] = max(best[fast], len(batch) / (time.perf_counter() - began))
            rows[fast] = batch.rows
        if rows[True] != rows[False]:
            raise ValueError("the fast decode path and the model path disagree on these records")
    return best[True], best[False]


@contextlib.contextmanager
def worker_heap() -> Iterator[None]:
    """The garbage collector as `billing worker` sets it (`settle_heap`), for one measurement:
    without it, these figures would carry collections a worker does not make (measured: decode
    145k charges/s with the interpreter's defaults, 178k with the worker's)."""
    threshold = gc.get_threshold()
    settle_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def components(
    bench: Bench, records: list[tuple[bytes, bytes]], topic: str, batch_records: int = 2000
) -> Components:
    database = await bench.new_database("components")
    settings = settings_from(bench.env(database, topic, "components"))
    limits = Limits.for_record(datetime.now(UTC), settings.max_clock_skew, settings.zone)
    sink = PostgresSink(settings)
    await sink.start()
    await sink.run(seed_defaults)
    decode_seconds = sink_seconds = 0.0
    charges = 0
    pending: list[PendingCharge] = []
    cpu = CpuMeter([], bench.pg.pgdata / "postmaster.pid")
    wal_before = await _wal_position(database)
    with worker_heap():
        try:
            for start in range(0, len(records), batch_records):
                began = time.perf_counter()
                batch = decode_batch(
                    records, settings, limits, start, min(start + batch_records, len(records)), True
                )
                decoded_at = time.perf_counter()
                pending += batch.rows
                result = await sink.flush(batch)
                sink_seconds += time.perf_counter() - decoded_at
                decode_seconds += decoded_at - began
                charges += result.charges
            cpu.stop()  # while the sink's connections live: an ended backend's CPU time is gone
            wal = await _wal_position(database) - wal_before
        finally:
            await sink.stop()
        fast, model = decode_rates(records, settings, limits)
    return Components(
        charges, len(records), decode_seconds, sink_seconds, pending, model, fast, cpu.pg_cpu, wal
    )


async def _wal_position(database: str) -> int:
    """The server's write-ahead log position in bytes (the whole server: nothing else writes)."""
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))
    finally:
        await conn.close()
