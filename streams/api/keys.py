"""API keys: what a key may do, and how keys are made, stored and found.

A key is `bk_<id>_<secret>`: the id is public (listed, logged, revoked by), the secret is 256
random bits. Only SHA-256 of the whole key is stored (migration 020): a key that is never
stored cannot leak from Postgres, and a fast hash is safe for a random secret of that size (a
slow password hash protects guessable passwords, which these are not). A request's key is found
by the hash through a unique index, then compared with `hmac.compare_digest`, so neither the
lookup nor the comparison tells an attacker how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import TypeAdapter, ValidationError

from schemas.charge import Identifier

Kind = Literal["ingest", "read:all", "read:account"]
PREFIX = "bk_"
_ACCOUNT = TypeAdapter(Identifier)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a key may do. `accounts`: for `ingest`, the accounts it may send for (empty: any);
    for `read:account`, the one account it may read (a customer's portal token)."""

    kind: Kind
    accounts: tuple[str, ...] = ()

    @property
    def reads(self) -> bool:
        return self.kind != "ingest"

    @property
    def portal_account(self) -> str | None:
        """The only account a portal token sees; None for keys that see every account."""
        return self.accounts[0] if self.kind == "read:account" else None

    def may_ingest_for(self, account: str) -> bool:
        return self.kind == "ingest" and (not self.accounts or account in self.accounts)

    def __str__(self) -> str:
        if self.kind == "read:account":
            return f"read:account={self.accounts[0]}"
        if self.kind == "ingest" and self.accounts:
            return f"ingest (accounts: {', '.join(self.accounts)})"
        return self.kind


def parse_scope(text: str, accounts: Sequence[str] = ()) -> Scope:
    """`ingest` (+ optional accounts), `read:all` or `read:account=X`, as typed on the CLI."""
    text = text.strip()
    for account in accounts:
        _check_account(account)
    if text == "ingest":
        return Scope("ingest", tuple(dict.fromkeys(accounts)))
    if accounts:
        raise ValueError("--account restricts `ingest` keys only; a portal key is read:account=X")
    if text == "read:all":
        return Scope("read:all")
    if text.startswith("read:account="):
        account = text.removeprefix("read:account=")
        _check_account(account)
        return Scope("read:account", (account,))
    raise ValueError(f"unknown scope {text!r}: use ingest, read:all or read:account=ACCOUNT")


def _check_account(account: str) -> None:
    try:
        _ACCOUNT.validate_python(account)
    except ValidationError:
        raise ValueError(f"not an account id: {account!r}") from None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def new_key() -> tuple[str, str]:
    """(key id, whole key); the whole key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(presented: str) -> str | None:
    """The public id inside a presented key (for logs), None when it is not of our shape."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, _ = presented[len(PREFIX) :].partition("_")
    return key_id if sep and len(key_id) == 12 else None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key without its hash: what `billing keys list` shows."""

    id: str
    scope: Scope
    name: str
    created_at: datetime
    revoked_at: datetime | None = field(default=None)


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        row["id"],
        Scope(row["scope"], tuple(row["accounts"])),
        row["name"],
        row["created_at"],
        row["revoked_at"],
    )


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool, scope: Scope, name: str = ""
) -> tuple[KeyInfo, str]:
    """Store a new key; returns its info and the whole key (to print once)."""
    key_id, key = new_key()
    row = await conn.fetchrow(
        "INSERT INTO api_keys (id, key_hash, scope, accounts, name) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id, scope, accounts, name, created_at, revoked_at",
        key_id,
        hash_key(key),
        scope.kind,
        list(scope.accounts),
        name,
    )
    return _info(row), key


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool, include_revoked: bool = False) -> list[KeyInfo]:
    rows = await conn.fetch(
        "SELECT id, scope, accounts, name, created_at, revoked_at FROM api_keys "
        "WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id",
        include_revoked,
    )
    return [_info(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> bool:
    """True when a live key was revoked; False when there is no such key or it already was."""
    done = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING true", key_id
    )
    return bool(done)


async def find_key(conn: asyncpg.Connection | asyncpg.Pool, presented: str) -> KeyInfo | None:
    """The stored key matching `presented` (revoked ones included: the caller says why not)."""
    digest = hash_key(presented)
    row = await conn.fetchrow(
        "SELECT id, key_hash, scope, accounts, name, created_at, revoked_at FROM api_keys WHERE key_hash = $1",
        digest,
    )
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None
    return _info(row)
