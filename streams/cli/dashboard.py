"""`billing dashboard`: serve the read-only dashboard (`streams.dashboard`) on this machine."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import click
from aiohttp import web

from streams.cli.common import load_settings
from streams.config.settings import Settings
from streams.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, check_token, create_app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve(settings: Settings, host: str, port: int, token: str | None) -> None:
    """Serve until cancelled (Ctrl-C)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # an absent broker is "unavailable"
    runner = web.AppRunner(create_app(settings, token), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        click.echo(f"billing dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@click.command("dashboard")
@click.option(
    "--host", default=None, help=f"Address to bind [BILLING_DASHBOARD_HOST; default {DEFAULT_HOST}]."
)
@click.option(
    "--port", type=int, default=None, help=f"Port [BILLING_DASHBOARD_PORT; default {DEFAULT_PORT}]."
)
def dashboard(host: str | None, port: int | None) -> None:
    """Serve a read-only billing dashboard: daily charts, filters, CSV, pipeline state.

    Set BILLING_DASHBOARD_TOKEN to require a token (Bearer, or the password of the browser's
    login prompt). It binds to 127.0.0.1 unless told otherwise.
    """
    settings = load_settings()
    host = host or settings.dashboard_host
    port = port if port is not None else settings.dashboard_port
    if not 0 < port < 65536:
        raise click.ClickException(f"port {port} is out of range")
    token = None if settings.dashboard_token is None else settings.dashboard_token.get_secret_value()
    check_token(token)
    if not token and not _is_loopback(host):
        click.echo(f"warning: serving billing data on {host} without BILLING_DASHBOARD_TOKEN", err=True)
    try:
        asyncio.run(serve(settings, host, port, token))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
