"""Helpers for the tests of `billing api`: a real server process, keys made by the real CLI,
and a pipeline (worker + API) on the session broker or on a broker behind a TCP proxy."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
from click.testing import CliRunner, Result

from streams.kafka.topics import ensure_topics
from tests import support
from tests.support import WorkerProcess, charge_dict, wait_until


class ApiServer(WorkerProcess):
    """`billing api` as a child process on a free port of its own."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = support.free_port()
        super().__init__(env, log_path, {"BILLING_API_PORT": str(self.port)}, ("streams", "api"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 90) -> None:
        """Until /ready says 200 (Kafka connected, Postgres answering)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:

            async def ready() -> bool:
                assert self.alive, f"billing api exited:\n{self.log_tail()}"
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout, "billing api /ready", on_timeout=self.log_tail)


async def billing_cli(env: Mapping[str, str], command: click.Command, *args: str) -> Result:
    """A `billing` subcommand in-process with `env` as the whole BILLING_* configuration.

    In a thread because the command runs its own event loop; the settings cache is cleared so
    that each call reads `env`, and BILLING_* variables of the outer process are hidden.
    """
    from streams.config.settings import get_settings

    def call() -> Result:
        hidden: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BILLING_")}
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(command, list(args), env={**hidden, **env}, catch_exceptions=False)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(call)


async def create_key(env: Mapping[str, str], scope: str, *accounts: str) -> str:
    """A new key from `billing keys create` (its first line of stdout is the key)."""
    from streams.cli.api import keys

    args = ["create", "--scope", scope]
    for account in accounts:
        args += ["--account", account]
    result = await billing_cli(env, keys, *args)
    assert result.exit_code == 0, result.output
    return str(result.stdout.splitlines()[0])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Pipeline:
    """One isolated pipeline: its env, a worker and an API server."""

    env: dict[str, str]
    worker: WorkerProcess
    api: ApiServer
    database: str

    def logs(self) -> str:
        return f"--- worker\n{self.worker.log_tail()}\n--- api\n{self.api.log_tail()}"

    async def wait_counted(self, charges: list[dict[str, Any]], timeout: float = 120) -> None:
        """Until Postgres holds exactly the ground truth of `charges` for their accounts."""
        expected = support.ground_truth(charges, support.settings_from(self.env).zone)
        accounts = {c["account_id"] for c in charges}

        async def exact() -> bool:
            return not support.mismatches(expected, await support.fetch_rows(self.database, accounts))

        await wait_until(exact, timeout, "rows equal to the ground truth", on_timeout=self.logs)


@asynccontextmanager
async def pipeline(
    bootstrap: str, database: str, tmp_path: Path, **overrides: str
) -> AsyncIterator[Pipeline]:
    """A worker and an API server on their own topics; both stopped on exit."""
    env = support.pipeline_env(bootstrap, database, tmp_path / "data", **overrides)
    await ensure_topics(support.settings_from(env))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    api = ApiServer(env, tmp_path / "api.log")
    api.start()
    try:
        await api.wait_ready()
        yield Pipeline(env, worker, api, database)
    finally:
        api.stop()
        worker.stop()


async def post_until(client: httpx.AsyncClient, path: str, timeout: float, **kwargs: Any) -> httpx.Response:
    """POST until the answer is not 503 (Kafka coming back), within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.post(path, **kwargs)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.5)


def good_charges(accounts: list[str], per_account: int, when: datetime) -> list[dict[str, Any]]:
    """Valid charges, accounts in order (a test can tell their request indexes), two users each,
    a minute apart before `when` so that none is in the future by the time it is checked."""
    return [
        charge_dict(a, f"user-{i % 2}", "openai", "completion", when - timedelta(minutes=i), 10 + i, 5 + i)
        for a in accounts
        for i in range(per_account)
    ]
