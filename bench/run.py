"""The run: the data and the order of the measurements; what each adds to the report is in
bench/steps, the sizes in bench/plan."""

from __future__ import annotations

import argparse
import gc

import asyncpg
from rich.console import Console

from bench import data, produce
from bench.infra import Bench
from bench.plan import FULL, MEASUREMENTS, QUICK
from bench.report import Report
from bench.steps import Steps, rate


class Run(Steps):
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        self.sizes = QUICK if args.quick else FULL
        self.only = set(args.only.split(",")) if args.only else set(MEASUREMENTS)
        self.report = Report("quick" if args.quick else "full", args.seed)
        self.postgres = ""

    async def guarded(self, name: str, coro: object) -> None:
        """Run one measurement; a failure is reported in the table, the others still run."""
        try:
            await coro  # type: ignore[misc]
        except Exception as exc:
            self.console.log(f"[red]{name} failed: {exc}")
            self.report.add(name, "FAILED", str(exc).splitlines()[0][:200])

    async def main(self, bench: Bench) -> None:
        s, r, f = self.sizes, self.report, self.report.figures
        conn = await asyncpg.connect(bench.server_url)
        self.postgres = (await conn.fetchval("SHOW server_version")).split()[0]
        self.postgres = f"PostgreSQL {self.postgres} (private server, fsync on)"
        await conn.close()

        self.step(f"generating {s.n:,} seeded charges (1,000 Zipf accounts, 7 days)")
        charges = data.realistic(s.n, self.args.seed)
        gc.freeze()  # a million live models must not slow every later collection down
        expected = data.expected_rows(charges)
        topic, single_topic = "bench-charges", "bench-single"
        for name in (topic, "bench-bare", single_topic, "bench-http"):
            await bench.create_topic(name)

        self.step("producing: ChargeProducer, then the same bytes with a bare aiokafka producer")
        lib = await produce.with_library(bench.settings(topic), charges)
        records = len(lib.records)
        r.add(
            "producer: ChargeProducer (batched per account)",
            rate(lib.rate),
            f"{s.n:,} charges in {records:,} records, {lib.bytes / 1e6:.0f} MB, {lib.seconds:.1f} s",
        )
        if "producer" in self.only:
            bare = await produce.bare(bench.settings("bench-bare"), "bench-bare", lib.records, s.n)
            f["producer_ratio"] = lib.rate / bare.rate
            r.add(
                "producer: bare aiokafka, same bytes",
                rate(bare.rate),
                f"ChargeProducer = {lib.rate / bare.rate:.0%} of it",
            )
            encode = produce.encode_only(charges[:200_000])
            r.add(
                "producer: JSON encoding alone",
                rate(encode),
                f"bound for a producer that encodes: 1/(1/bare + 1/encode) = "
                f"{1 / (1 + bare.rate / encode):.0%} of bare",
            )
        if "components" in self.only:
            await self.guarded("components", self.components(bench, lib.records[:20_000], topic))
        if "explain" in self.only:
            await self.guarded("explain", self.explain(bench, lib.records[:20_000], topic))
        lib.records.clear()
        single = charges[: s.single]
        one = await produce.with_library(bench.settings(single_topic), single, batch=False)
        r.add("producer: ChargeProducer, one charge per record", rate(one.rate), f"{s.single:,} charges")

        if "ceiling" in self.only:
            await self.guarded("ceiling", self.ceilings(bench, topic, single_topic, records))
        if "e2e" in self.only:
            await self.guarded("e2e 1 worker", self.e2e(bench, topic, expected, 1))
        if "e2e2" in self.only:
            await self.guarded("e2e 2 workers", self.e2e(bench, topic, expected, 2))
        if "single" in self.only:
            await self.guarded("e2e single", self.single(bench, single_topic, single))
        if "seed" in self.only:
            await self.guarded("seed", self.seed(bench, charges[: s.seed]))
        if "naive" in self.only:
            await self.guarded("naive Faust", self.naive(bench, topic))
        if "latency" in self.only:
            await self.guarded("latency", self.latency(bench, charges[:5000]))
        if "http" in self.only:
            await self.guarded("http", self.http(bench, charges[: s.http]))
        del charges, single, expected
        gc.unfreeze()
        gc.collect()
        if "scale" in self.only:
            await self.guarded("scale", self.scale(bench))
        self.report.ratio("x_seed", "e2e", "seed")
        self.report.ratio("x_naive", "e2e", "naive_faust")
        self.report.ratio("of_ceiling", "e2e", "ceiling_aiokafka")
