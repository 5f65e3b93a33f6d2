"""What each measurement adds to the report: a step runs one bench module and turns its result
into rows and figures. `Run` (bench/run) inherits them and decides their order and the data.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from bench import ceiling, components, data, e2e, explain, http, latency, naive, pricing, scale, seed
from bench.infra import Bench
from bench.plan import HTTP_RATE, Sizes
from bench.report import Report


def rate(value: float, unit: str = "charges/s") -> str:
    return f"{value:,.0f} {unit}"


class Steps:
    """The measurements of a run, one method each; `Run` sets the attributes below."""

    args: argparse.Namespace
    console: Console
    sizes: Sizes
    report: Report

    def step(self, text: str) -> None:
        self.console.log(text)

    async def components(self, bench: Bench, records: list, topic: str) -> None:
        self.step(
            f"components: decode alone, then the Postgres sink alone, on {len(records):,} of those records"
        )
        c = await components.components(bench, records, topic)
        note = f"{c.charges:,} charges in {c.records:,} records, no Kafka, no Faust"
        self.report.add("component: decode + batch (worker CPU)", rate(c.decode_rate), note)
        f = self.report.figures
        f["decode"], f["decode_x"] = c.fast_decode_rate, c.fast_decode_rate / c.model_decode_rate
        note = (
            f"decode + batch alone, best of 3 interleaved passes over the same records: the worker's "
            f"path = {f['decode_x']:.1f}× the model path (decode_record + add_record, "
            f"{rate(c.model_decode_rate)}), equal rows"
        )
        self.report.add("component: decode, the worker's path", rate(c.fast_decode_rate), note)
        note = (
            "PostgresSink.flush per 2,000 records: dedup ledger, pricing with the default book, "
            "fenced upserts of the daily rows and the rows by model, one transaction; "
            f"{rate(c.postgres_core_rate, 'charges')} per Postgres CPU-second, "
            f"{c.wal_bytes / max(c.charges, 1):,.0f} B of WAL per charge"
        )
        self.report.add("component: Postgres sink", rate(c.sink_rate), note)
        note = "decode then flush, one after the other, as the worker runs them: the bound without Faust"
        self.report.add("component: serial bound 1/(1/decode + 1/sink)", rate(c.serial_rate), note)
        p = pricing.pricing_cost(c.pending)
        note = (
            f"settle per charge: {p.plain_us:.2f} µs unpriced, {p.priced_us:.2f} µs with the default book "
            f"({p.priced_share:.0%} of charges priced), ratio {p.priced_us / p.plain_us:.2f}"
        )
        self.report.add(
            "component: pricing + rows by model (worker CPU)",
            f"+{p.priced_us - p.plain_us:.2f} µs/charge",
            note,
        )

    async def explain(self, bench: Bench, records: list, topic: str) -> None:
        self.step(
            f"explain: flush {len(records):,} records, then the last chunk's write statements under EXPLAIN ANALYZE"
        )
        for row in (await explain.explain_flush(bench, records, topic)).rows():
            self.report.add(*row)

    async def ceilings(self, bench: Bench, topic: str, single_topic: str, records: int) -> None:
        s, r = self.sizes, self.report
        self.step("ceiling: bare consumers reading and JSON-decoding the same records")
        aio = await ceiling.aiokafka_ceiling(bench.bootstrap, topic, s.n)
        r.figures["ceiling_aiokafka"] = aio.rate
        r.add(
            "ceiling: aiokafka getmany + json.loads", rate(aio.rate), f"{rate(aio.record_rate, 'records/s')}"
        )
        conf = await ceiling.confluent_ceiling(bench.bootstrap, topic, s.n)
        if conf is not None:
            r.figures["ceiling_confluent"] = conf.rate
            note = rate(conf.record_rate, "records/s")
            r.add("ceiling: confluent-kafka consume + json.loads", rate(conf.rate), note)
        one = await ceiling.aiokafka_ceiling(bench.bootstrap, single_topic, s.single)
        r.add(
            "ceiling: aiokafka, one charge per record",
            rate(one.record_rate, "records/s"),
            f"{s.single:,} records",
        )

    async def e2e(self, bench: Bench, topic: str, expected: dict, workers: int) -> None:
        s, r = self.sizes, self.report
        self.step(f"e2e: {s.n:,} charges, {workers} worker(s), from worker start until Postgres has them all")
        done = await e2e.e2e(bench, topic, s.n, expected, f"e2e{workers}w", workers)
        key = "e2e" if workers == 1 else "e2e_2w"
        r.figures[key] = done.rate
        if workers == 1 and done.progress.first is not None:
            r.figures["steady"], r.figures["startup_s"] = done.steady_rate, done.progress.first
        note = (
            f"{done.progress.done:.1f} s from start ({done.progress.first:.1f} s to the first flush); "
            f"steady {rate(done.steady_rate)}; {done.rows:,} rows exact; peak RSS {done.rss_peak / 2**20:.0f} MiB; "
            f"{done.cpu.describe()}; {done.cpu.per_core(s.n)}"
        )
        r.add(
            f"e2e: {workers} worker{'s' if workers > 1 else ''}, producer layout, N={s.n:,}",
            rate(done.rate),
            note,
        )

    async def single(self, bench: Bench, topic: str, charges: list) -> None:
        s, r = self.sizes, self.report
        self.step(f"e2e: {s.single:,} charges, one charge per record, 1 worker")
        done = await e2e.e2e(bench, topic, s.single, data.expected_rows(charges), "single", 1)
        r.figures["e2e_single"] = done.rate
        note = f"steady {rate(done.steady_rate)}; {done.progress.done:.1f} s; {done.cpu.describe()}"
        r.add(f"e2e: 1 worker, one charge per record, N={s.single:,}", rate(done.rate), note)

    async def seed(self, bench: Bench, charges: list) -> None:
        self.step(f"seed baseline: {len(charges):,} charges, one INSERT each, then the per-group job")
        result = await seed.run_seed(await bench.new_database("seed"), charges)
        self.report.figures["seed"] = result.rate
        note = (
            f"inserts {rate(result.insert_rate)} on {result.concurrency} connections ({result.insert_seconds:.1f} s), "
            f"aggregation {result.groups:,} groups in {result.aggregate_seconds:.1f} s"
        )
        self.report.add(
            f"seed: Django/Celery pipeline re-implemented, N={len(charges):,}", rate(result.rate), note
        )

    async def naive(self, bench: Bench, topic: str) -> None:
        window = self.sizes.naive_window
        self.step(f"naive Faust: table update + upsert per charge, timed over {window:.0f} s")
        result = await naive.naive_faust(bench, topic, window)
        self.report.figures["naive_faust"] = result.rate
        note = f"{result.counted:,} charges in {result.window:.0f} s of steady state (start-up not counted)"
        self.report.add("naive Faust: per-event table + upsert", rate(result.rate), note)

    async def latency(self, bench: Bench, templates: list) -> None:
        seconds = self.sizes.latency_seconds
        self.step(f"latency: 2,000 charges/s for {seconds:.0f} s, produce to visible in the provisional row")
        result = await latency.latency(bench, templates, seconds)
        p50, p99, top = (result.pct(0.5) * 1000, result.pct(0.99) * 1000, max(result.latencies) * 1000)
        self.report.figures["p99_ms"] = p99
        note = (
            f"max {top:.0f} ms; {len(result.latencies)} probes, {result.lost} never seen; "
            f"achieved {rate(result.rate)}; BILLING_FLUSH_INTERVAL 2 s, producer linger 50 ms"
        )
        self.report.add("latency p50 / p99", f"{p50:.0f} / {p99:.0f} ms", note)

    async def scale(self, bench: Bench) -> None:
        levels, r = self.sizes.levels, self.report
        self.step(f"scale: one warm worker fed new daily keys up to {levels[-1]:,}, then SIGKILL and restart")
        result = await scale.scale(bench, levels, self.args.seed, self.console.log)
        idle = result.rss_idle
        for level in result.levels:
            note = (
                f"+{level.increment:,} new keys in {level.seconds:.1f} s (warm worker, producing included); "
                f"worker RSS end {level.rss_end / 2**20:.0f} MiB, peak {level.rss_peak / 2**20:.0f} MiB "
                f"(idle {idle / 2**20:.0f}); Postgres {level.rows_bytes / level.keys:.0f} B/key rows "
                f"+ {level.seen_bytes / level.keys:.0f} B/charge dedup ledger"
            )
            r.add(f"scale: {level.keys:,} keys open", rate(level.rate), note)
        large = result.levels[-1]
        r.figures["bytes_per_key"] = max(0.0, (large.rss_end - idle) / large.keys)
        r.add(
            f"worker RSS per open key at {large.keys:,}",
            f"{r.figures['bytes_per_key']:.0f} B",
            f"(RSS {large.rss_end / 2**20:.0f} MiB - idle {idle / 2**20:.0f} MiB) / keys; the worker keeps "
            f"no per-key state: this is flush-batch memory; state dir {result.state_dir_bytes / 1e6:.1f} MB",
        )
        if len(result.levels) >= 2:
            before = result.levels[-2]
            r.figures["scale_flatness"] = large.rate / before.rate
            r.add(
                f"throughput at {large.keys:,} vs {before.keys:,} keys",
                f"{r.figures['scale_flatness']:.2f}×",
                f"{rate(large.rate)} vs {rate(before.rate)}",
            )
        if result.recovery_seconds is not None:
            r.figures["recovery_s"] = result.recovery_seconds
            note = "SIGKILL to a new charge visible: restart, group join (dead member times out), flush"
            r.add(f"recovery after SIGKILL ({large.keys:,} keys)", f"{result.recovery_seconds:.1f} s", note)

    async def http(self, bench: Bench, charges: list) -> None:
        s, r = self.sizes, self.report
        self.step(
            f"http: `billing produce` on {len(charges):,} JSON lines, then the same in {http.BATCH}-charge POSTs"
        )
        cli = await http.billing_produce(bench.settings("bench-http"), charges)
        r.add(
            "producer: `billing produce FILE` (JSON lines)",
            rate(cli),
            f"{len(charges):,} charges, in-process",
        )
        self.step(f"http: single charges at {HTTP_RATE:,}/s for {s.http_seconds:.0f} s")
        done = await http.http_front_door(bench, "bench-http", charges, HTTP_RATE, s.http_seconds)
        r.figures["http_ingest"] = done.ingest_rate / cli
        note = (
            f"{len(charges):,} charges, {http.IN_FLIGHT} requests in flight, 202 after Kafka's ack; "
            f"{done.ingest_rate / cli:.0%} of `billing produce`"
        )
        r.add(f"http: POST /v1/charges, {http.BATCH}-charge batches", rate(done.ingest_rate), note)
        p50, p99 = done.pct(0.5) * 1000, done.pct(0.99) * 1000
        r.figures["http_p99_ms"] = p99
        note = (
            f"{len(done.latencies):,} requests answered 202 (each after Kafka's ack), {done.errors} not; "
            f"open loop from the scheduled send time; the server's own p99 ≤ {done.server_p99 * 1000:.0f} ms "
            f"(its histogram bucket)"
        )
        r.add(
            f"http: one charge per request at {HTTP_RATE:,}/s, p50 / p99", f"{p50:.0f} / {p99:.0f} ms", note
        )
