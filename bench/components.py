"""Where a worker's time goes: its two halves measured alone, in this process, on the same records.

- decode: `streams.charge.decode.decode_record` + `Batch.add_record` over the e2e records (the bytes the
  producer sent), i.e. JSON, validation and the pending rows, with no Kafka and no Faust;
- sink: `PostgresSink.flush` of those batches, 2,000 records each as the worker takes them
  (BILLING_BATCH_RECORDS), into a fresh database with the default price book: the COPY, dedup,
  pricing, the fenced upserts of the daily rows and the rows by model, one transaction.
The worker runs them one after the other for each batch, so 1 / (1/decode + 1/sink) is what it
could reach if Faust delivered records for free; the gap to the e2e figure is Faust's per-record
machinery and the waiting between batches.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.infra import Bench
from streams.charge.decode import Limits, decode_record
from streams.ops.prices import seed_defaults
from streams.rules.batch import Batch
from streams.rules.settle import PendingCharge
from streams.sink.postgres import PostgresSink
from tests.support import settings_from


@dataclass
class Components:
    charges: int
    records: int
    decode_seconds: float
    sink_seconds: float
    pending: list[PendingCharge]  # what the batches held, for the pricing measurement

    @property
    def decode_rate(self) -> float:
        return self.charges / self.decode_seconds

    @property
    def sink_rate(self) -> float:
        return self.charges / self.sink_seconds

    @property
    def serial_rate(self) -> float:
        return self.charges / (self.decode_seconds + self.sink_seconds)


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
    try:
        for start in range(0, len(records), batch_records):
            began = time.perf_counter()
            batch = Batch(settings.zone)
            for offset in range(start, min(start + batch_records, len(records))):
                key, value = records[offset]
                decoded = decode_record(value, key, limits)
                # offsets grow within each partition, as a topic's do: the fences are per partition
                batch.add_record(
                    zlib.crc32(key) % settings.partitions, offset, decoded.charges, decoded.positions
                )
            decoded_at = time.perf_counter()
            pending += batch.rows
            result = await sink.flush(batch)
            sink_seconds += time.perf_counter() - decoded_at
            decode_seconds += decoded_at - began
            charges += result.charges
    finally:
        await sink.stop()
    return Components(charges, len(records), decode_seconds, sink_seconds, pending)
