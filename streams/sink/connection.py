"""A Postgres connection that outlasts Postgres: the sink's writes retry on a fresh connection.

A worker holds its batch while Postgres is away (down, restarting, failing over, or silent on a
frozen connection), so every operation runs here until it succeeds: a transient failure waits
with capped, jittered exponential backoff and retries on a new connection; a value Postgres
refuses becomes `SinkDataError` (a record is to blame, and the worker dead-letters it); any
other refusal is `SinkFatalError`, and the worker stops loudly instead of skipping data.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from streams.config.settings import Settings
from streams.errors import SinkDataError, SinkFatalError
from streams.sink import pg
from streams.sink.pg import RECORD_ERRORS, TRANSIENT

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingConnection:
    """One connection, one operation at a time, each retried until it succeeds or cannot.

    Subclasses set up a fresh connection in `_prepare` (it runs on every connect, so it must be
    idempotent) and run their operations through `_run`.
    """

    def __init__(
        self, settings: Settings, on_retry: Callable[[BaseException, int], None] | None = None
    ) -> None:
        self.settings = settings
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._on_retry = on_retry
        self._stopped = False
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self._busy_since: float | None = None  # monotonic start of the operation under way

    @property
    def connected(self) -> bool:
        """True while an open Postgres connection is held."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def troubled(self) -> bool:
        """Failing, or busy for longer than a statement may take (a frozen connection)."""
        limit = self.settings.pg_command_timeout.total_seconds()
        busy = self._busy_since is not None and time.monotonic() - self._busy_since > limit
        return self.failing_since is not None or busy

    async def run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `operation` on the connection with its retries (for the day closer)."""
        return await self._run(operation)

    async def close(self) -> None:
        self._stopped = True
        if self._conn is not None:
            await self._conn.close(timeout=5)
            self._conn = None

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        """Set up a fresh connection before its first operation."""

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            # Every statement has a deadline: a connection that stops answering (packets dropped,
            # sockets open) fails the operation, which is retried on a fresh connection.
            conn = await pg.connect(self.settings)
            await self._prepare(conn)
            self._conn = conn
        return self._conn

    async def _run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `operation` until it succeeds; transient failures wait and retry on a fresh
        connection, others raise. A statement past its deadline counts as transient."""
        attempt = 0
        cap = self.settings.pg_retry_max_backoff.total_seconds()
        async with self._lock:
            self._busy_since = time.monotonic()
            try:
                while True:
                    try:
                        result = await operation(await self._connection())
                        self.failing_since = None
                        return result
                    except TRANSIENT as exc:
                        attempt += 1
                        if self.failing_since is None:
                            self.failing_since = time.monotonic()
                        await self._drop_connection()
                        if self._stopped:
                            raise
                        delay = min(cap, 0.2 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
                        log.warning(
                            "postgres unavailable or not answering (%s, failing for %.0fs); retry %d in "
                            "%.1fs on a new connection, holding the batch",
                            type(exc).__name__,
                            time.monotonic() - self.failing_since,
                            attempt,
                            delay,
                        )
                        if self._on_retry:
                            self._on_retry(exc, attempt)
                        await asyncio.sleep(delay)
                    except SinkFatalError:
                        raise
                    except RECORD_ERRORS as exc:
                        # The message may quote the value: it stays out of the log and the exception.
                        raise SinkDataError(f"postgres refused a value: {type(exc).__name__}") from None
                    except asyncpg.PostgresError as exc:
                        raise SinkFatalError(
                            f"postgres rejected the write: {type(exc).__name__}: {exc}"
                        ) from exc
            finally:
                self._busy_since = None

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
