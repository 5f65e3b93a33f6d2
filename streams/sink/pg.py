"""How the project talks to Postgres from a long-running process: deadlines, keepalives, and
which failures are worth a retry.

A worker holds its batch while Postgres is away and must neither hang on a silent connection
nor give up on one that a restart or a failover will bring back. Every connection therefore gets
a statement deadline and TCP keepalives on both ends, and the exceptions below are the ones a
fresh connection can cure.
"""

from __future__ import annotations

import asyncio
import socket

import asyncpg

from streams.config.settings import Settings

TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
)
# SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation): Postgres refuses
# a value, which only a record's content can bring into our statements.
RECORD_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


async def connect(settings: Settings) -> asyncpg.Connection:
    """A connection whose every statement has BILLING_PG_COMMAND_TIMEOUT as its deadline."""
    conn = await asyncpg.connect(
        settings.dsn,
        timeout=10,
        command_timeout=settings.pg_command_timeout.total_seconds(),
        server_settings={"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10"},
    )
    _keepalive(conn)
    return conn


def _keepalive(conn: asyncpg.Connection) -> None:
    """TCP keepalives on our side too, so a peer that vanished is noticed without traffic."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
