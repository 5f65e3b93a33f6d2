"""`billing api` (the HTTP service) and `billing keys create|list|revoke` (its keys)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from streams.cli.common import load_settings

T = TypeVar("T")


@click.command()
@click.option("--host", default=None, help="address to bind (default BILLING_API_HOST)")
@click.option("--port", type=int, default=None, help="port (default BILLING_API_PORT)")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API: POST /v1/charges, GET /v1/usage, GET /v1/usage/changes.

    The OpenAPI schema is at /openapi.json (browsable at /docs); /health, /ready and /metrics
    need no key. Create keys with `billing keys create`.
    """
    import uvicorn

    from streams import logs
    from streams.api.app import serve

    settings = load_settings()
    logs.configure(settings)
    uvicorn.run(
        serve(settings),
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        log_config=logs.dict_config(settings),
        access_log=False,  # ours (streams.api.access) names the route and the key id, never the key
        server_header=False,
    )


@click.group()
def keys() -> None:
    """API keys of `billing api` (stored hashed; a key is shown once, when created)."""


def _with_db(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings = load_settings()

    async def go() -> T:
        try:
            conn = await asyncpg.connect(settings.dsn, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise click.ClickException(f"cannot reach Postgres: {type(exc).__name__}") from None
        try:
            return await work(conn)
        except asyncpg.UndefinedTableError:
            raise click.ClickException("no api_keys table: run `billing migrate` first") from None
        finally:
            await conn.close()

    return asyncio.run(go())


@keys.command("create")
@click.option("--scope", "scope_text", required=True, help="ingest, read:all or read:account=ACCOUNT")
@click.option("--account", "accounts", multiple=True, help="ingest keys: an account it may send for (repeat)")
@click.option("--name", default="", help="a note for `billing keys list` (who holds it)")
def create(scope_text: str, accounts: tuple[str, ...], name: str) -> None:
    """Create a key and print it once: it is stored hashed and cannot be shown again."""
    from streams.api.keys import create_key, parse_scope

    try:
        scope = parse_scope(scope_text, accounts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope/--account") from None
    info, key = _with_db(lambda conn: create_key(conn, scope, name))
    click.echo(key)
    click.echo(f"key {info.id} ({info.scope}) created; store it now, it is not shown again", err=True)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="include revoked keys")
def list_(include_revoked: bool) -> None:
    """Keys by id and scope (never the keys themselves)."""
    from streams.api.keys import list_keys

    rows: list[Any] = _with_db(lambda conn: list_keys(conn, include_revoked))
    for k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.id}\t{k.scope}\t{state}\tcreated {k.created_at:%Y-%m-%d %H:%M}\t{k.name}")


@keys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke a key by its id (every replica refuses it within BILLING_API_KEY_CACHE)."""
    from streams.api.keys import key_id_of, revoke_key

    key_id = key_id_of(key_id) or key_id  # a whole key pasted by mistake still names its id
    if not _with_db(lambda conn: revoke_key(conn, key_id)):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"key {key_id} revoked")
