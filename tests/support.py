"""Helpers shared by the integration and fault tests: real processes, real broker, real Postgres.

Ground truth here is computed from what a test produced, with plain dict arithmetic that does
not import the code under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from streams.embedded.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
# The summed columns ground truth checks, spelled out rather than imported from the code under
# test: a column the sink stopped summing must fail the tests, not drop out of them.
SUMS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "reported_cost_nanos",
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_database(server_url: str, name: str | None = None) -> str:
    """A fresh database on the server of `server_url`, migrated; its URL."""
    from streams.sink.migrate import migrate

    name = name or unique("billing_test").replace("-", "_")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def pipeline_env(bootstrap: str, database_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for one isolated pipeline: its own topics, consumer group and data dir."""
    name = unique("t")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        {
            "BILLING_KAFKA_BOOTSTRAP": bootstrap,
            "BILLING_DATABASE_URL": database_url,
            "BILLING_CHARGES_TOPIC": f"{name}-charges",
            "BILLING_DLQ_TOPIC": f"{name}-charges.dlq",
            "BILLING_APP_ID": f"{name}-app",
            "BILLING_DATA_DIR": str(data_dir),
            "BILLING_WEB_PORT": str(free_port()),
            "BILLING_FLUSH_INTERVAL": "500ms",
            "BILLING_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"BILLING_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def settings_from(env: Mapping[str, str]) -> Any:
    """Settings as the worker started with `env` would see them."""
    from streams.config.settings import Settings

    fields = {k[len("BILLING_") :].lower(): v for k, v in env.items() if k.startswith("BILLING_")}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class WorkerProcess:
    """`billing worker` as a child process, killable with SIGKILL like a crashed machine."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        command: tuple[str, ...] = ("streams", "worker"),
    ):
        self.env = {**env, **(extra_env or {})}
        self.log_path = log_path
        self.command = command  # `python -m <command>`
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.command],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    extra = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{extra}")


def closing_grace(now: datetime) -> str:
    """A BILLING_GRACE (in UTC) under which the days before `now`'s date close at once and
    `now`'s date stays open for the next 24 hours, whatever the time of day: end(yesterday) +
    grace lies just before `now`, so a test that starts at 23:59 and ends after midnight still
    sees the same days closed."""
    since_midnight = now - datetime.combine(now.date(), datetime.min.time(), now.tzinfo)
    return f"{max(0.0, since_midnight.total_seconds() - 1):.3f}s"


async def closing_pipeline(
    bootstrap: str, database_url: str, data_dir: Path, now: datetime, partitions: int
) -> dict[str, str]:
    """An isolated pipeline (topics created) whose days before `now`'s date close at once and
    where no other day closes during the test, whatever the time of day (see closing_grace)."""
    from streams.kafka.topics import ensure_topics

    env = pipeline_env(
        bootstrap,
        database_url,
        data_dir,
        partitions=str(partitions),
        kafka_session_timeout="6s",
        grace=closing_grace(now),
    )
    await ensure_topics(settings_from(env))
    return env


def times_on(day: date, now: datetime, rng: Any, within: float = 7200, n: int = 1) -> list[datetime]:
    """`n` moments in the first `within` seconds of `day` (UTC), none after `now`: on today's
    date early in the morning there are fewer seconds to choose from."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    room = max(0.0, min(within, (now - start).total_seconds() - 1))
    return [start + timedelta(seconds=rng.uniform(0, room)) for _ in range(n)]


def ground_truth(charges: Iterable[Mapping[str, Any]], zone: ZoneInfo) -> dict[tuple, dict[str, int]]:
    """Expected rows from produced charge dicts: one charge per (account_id, event_id), the
    first produced (tests produce a re-send only once the first copy has been read), its date
    in `zone`."""
    seen: set[tuple[str, str]] = set()
    out: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys((*SUMS, "charge_count"), 0))
    for c in charges:
        key = (c["account_id"], c["event_id"])
        if key in seen:
            continue
        seen.add(key)
        when = c["occurred_at"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        day = when.astimezone(zone).date()
        row = out[(c["account_id"], c["user_id"], c["provider"], day, c["charge_type"])]
        prompt, completion = int(c["prompt_tokens"]), int(c["completion_tokens"])
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += completion
        row["total_tokens"] += prompt + completion
        row["cached_tokens"] += int(c.get("cached_tokens", 0))
        row["reasoning_tokens"] += int(c.get("reasoning_tokens", 0))
        row["cache_write_tokens"] += int(c.get("cache_write_tokens", 0))
        row["reported_cost_nanos"] += int(c.get("reported_cost_nanos") or 0)
        row["charge_count"] += 1
    return dict(out)


async def fetch_rows(database_url: str, accounts: Iterable[str] | None = None) -> dict[tuple, dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        if accounts is None:
            records = await conn.fetch("SELECT * FROM daily_billing_records")
        else:
            records = await conn.fetch(
                "SELECT * FROM daily_billing_records WHERE account_id = ANY($1::text[])", list(accounts)
            )
    finally:
        await conn.close()
    return {
        (r["account_id"], r["user_id"], r["provider"], r["date"], r["charge_type"]): dict(r) for r in records
    }


def mismatches(expected: dict[tuple, dict[str, int]], actual: dict[tuple, dict[str, Any]]) -> list[str]:
    """Human-readable differences between ground truth and Postgres (empty when exact)."""
    problems = []
    for key in sorted(set(expected) | set(actual), key=str):
        want, got = expected.get(key), actual.get(key)
        if want is None:
            problems.append(f"unexpected row {key}")
            continue
        if got is None:
            problems.append(f"missing row {key}")
            continue
        for column, value in want.items():
            if got[column] != value:
                problems.append(f"{key} {column}: expected {value}, got {got[column]}")
    return problems


def charge_dict(
    account: str,
    user: str,
    provider: str,
    charge_type: str,
    when: datetime,
    prompt: int,
    completion: int,
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "occurred_at": when.isoformat(),
        "account_id": account,
        "user_id": user,
        "provider": provider,
        "charge_type": charge_type,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        **extra,
    }


async def produce_raw(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes, int | None]],
    timestamp: datetime | None = None,
) -> list[Any]:
    """Send exact bytes (bad input included), bypassing the validating producer; `timestamp`
    stamps the records (the worker judges a future charge against it), else the client does.

    Returns each record's metadata (partition, offset), in order.
    """
    from aiokafka import AIOKafkaProducer

    stamp = None if timestamp is None else int(timestamp.timestamp() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, partition=p, timestamp_ms=stamp) for k, v, p in records
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def encode_batch(charges: list[dict[str, Any]]) -> bytes:
    return json.dumps(charges if len(charges) != 1 else charges[0]).encode()


def days_between(rows: Iterable[tuple], index: int = 3) -> set[date]:
    return {k[index] for k in rows}
