"""Asking a Postgres server whether it answers, and creating the URL's database on it when it
lacks one: how the configured server is told apart from one that is not there (then the private
server is used) and from one that refuses us (a configuration mistake, reported).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from streams.errors import EmbeddedPostgresError as PostgresError
from streams.redaction import redact_url

log = logging.getLogger(__name__)

UNREACHABLE = (OSError, TimeoutError, asyncpg.CannotConnectNowError)


def database_name(url: str) -> str | None:
    """The database a URL names (None when it names none and the driver picks the user's)."""
    return unquote(urlsplit(url).path.lstrip("/")) or None


async def _connect(url: str, database: str | None = None, wait: float = 3.0) -> Any:
    kwargs = {"database": database} if database else {}
    return await asyncpg.connect(url, timeout=wait, **kwargs)


async def create_database_if_missing(url: str, wait: float = 3.0) -> bool:
    """Connect to the URL's database, creating it first when the server lacks it.

    Raises the driver's error when the server is unreachable (the caller decides what that
    means) and PostgresError when it answers but refuses us (wrong password, no permission):
    a private server would only hide such a configuration mistake. True if it created it.
    """
    name = database_name(url) or ""
    try:
        conn = await _connect(url, wait=wait)
        await conn.close()
        return False
    except asyncpg.InvalidCatalogNameError:
        pass
    except UNREACHABLE:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise PostgresError(f"Postgres at {redact_url(url)} refused us: {exc}") from exc
    try:
        conn = await _connect(url, database="postgres", wait=wait)
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # another process won the race
        finally:
            await conn.close()
    except UNREACHABLE:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise PostgresError(f"cannot create database {name!r} at {redact_url(url)}: {exc}") from exc
    log.info("created database %s at %s", name, redact_url(url))
    return True


async def postgres_reachable(url: str, wait: float = 3.0) -> bool:
    """True when the server in `url` accepts a connection (any database, even a missing one)."""
    try:
        conn = await _connect(url, wait=wait)
        await conn.close()
        return True
    except asyncpg.InvalidCatalogNameError:
        return True
    except (*UNREACHABLE, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
