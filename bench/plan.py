"""What a run measures and on how much data: the measurement names `--only` picks from, and the
sizes of a full and of a quick run.
"""

from __future__ import annotations

from dataclasses import dataclass

MEASUREMENTS = (
    "producer",
    "components",
    "explain",
    "ceiling",
    "e2e",
    "e2e2",
    "single",
    "seed",
    "naive",
    "latency",
    "http",
    "scale",
)


@dataclass(frozen=True)
class Sizes:
    n: int  # e2e charges, producer layout
    single: int  # e2e charges, one charge per record
    seed: int  # charges through the seed pipeline
    naive_window: float  # seconds the naive Faust app is timed
    latency_seconds: float
    levels: tuple[int, ...]  # distinct daily keys
    http: int = 100_000  # charges through POST /v1/charges
    http_seconds: float = 20  # of single-charge requests at HTTP_RATE


HTTP_RATE = 1_000
FULL = Sizes(1_000_000, 100_000, 50_000, 30, 60, (10_000, 100_000, 1_000_000))
QUICK = Sizes(100_000, 20_000, 20_000, 8, 15, (10_000, 100_000), http=20_000, http_seconds=5)
