"""Who is calling: `Authorization: Bearer <key>` -> the key's scope, or 401/403 with a reason.

Verified keys are cached for BILLING_API_KEY_CACHE (by the key's hash, never the key), so the
ingest path does not pay a Postgres round trip per request; a revocation therefore takes effect
within that time, on every replica. Unknown keys are cached as well, so a client hammering with
a bad key cannot turn each request into a query. The key itself is never logged: only its
public id (`bk_<id>_...`) appears in the access log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
from fastapi import Request

from streams.api.keys import KeyInfo, Scope, find_key, hash_key
from streams.errors import ApiError

CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified key of a request."""

    key_id: str
    scope: Scope


class KeyCache:
    """Key hash -> (stored key or None, expiry). Bounded: cleared whole when full."""

    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float) -> None:
        self.pool, self.ttl = pool, ttl_seconds
        self._entries: dict[bytes, tuple[KeyInfo | None, float]] = {}

    async def lookup(self, presented: str) -> KeyInfo | None:
        digest = hash_key(presented)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        info = await find_key(self.pool, presented)
        if len(self._entries) >= CACHE_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (info, now + self.ttl)
        return info


async def authenticate(request: Request) -> Caller:
    """The caller's key, or 401. Scope checks are the routes' (they know what is asked)."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(401, "missing_key", "send an API key as `Authorization: Bearer <key>`")
    cache: KeyCache = request.app.state.service.keys
    try:
        info = await cache.lookup(presented)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ApiError(
            503, "keys_unavailable", f"cannot check the key: Postgres is unavailable ({type(exc).__name__})"
        ) from None
    if info is None:
        raise ApiError(401, "unknown_key", "this API key is not known")
    if info.revoked_at is not None:
        raise ApiError(401, "revoked_key", f"API key {info.id} was revoked")
    request.state.key_id = info.id  # for the access log
    return Caller(info.id, info.scope)


async def ingest_caller(request: Request) -> Caller:
    caller = await authenticate(request)
    if caller.scope.kind != "ingest":
        raise ApiError(
            403, "wrong_scope", f"key {caller.key_id} has scope {caller.scope}; sending needs `ingest`"
        )
    return caller


async def reader(request: Request) -> Caller:
    caller = await authenticate(request)
    if not caller.scope.reads:
        raise ApiError(
            403,
            "wrong_scope",
            f"key {caller.key_id} has scope ingest; reading needs read:all or read:account=X",
        )
    return caller


def readable_accounts(caller: Caller, asked: list[str]) -> list[str]:
    """The account filter a query runs with: a portal token's own account, whatever was asked.

    Asking a portal token for another account is refused (403) rather than answered empty, so
    a customer's UI that builds a wrong link finds out instead of showing "no usage".
    """
    own = caller.scope.portal_account
    if own is None:
        return asked
    others = [a for a in asked if a != own]
    if others:
        raise ApiError(403, "forbidden_account", f"key {caller.key_id} reads account {own!r} only")
    return [own]
