"""The dashboard's aiohttp app: a read-only web page over `daily_billing_records`.

Why it is built this way:
- Loopback by default (BILLING_DASHBOARD_HOST=127.0.0.1, BILLING_DASHBOARD_PORT=8088): billing
  data is never exposed by accident. With BILLING_DASHBOARD_TOKEN set, every route but
  /healthz needs it, as `Authorization: Bearer <token>` (scripts) or as the password of HTTP
  Basic auth (so a browser can prompt for it and then download the CSV with a plain link);
  compared with hmac.compare_digest.
- Read-only twice: it only issues SELECTs built by `streams.ops.totals`, and its connections run
  with default_transaction_read_only, so even a bug cannot write.
- Errors are JSON with a message for humans: 400 for bad parameters (a NUL byte included),
  503 when Postgres is away, 500 without details otherwise (the traceback goes to the server
  log only). A token that is set but blank is refused at start, never read as "no token".
- Static assets ship in the package (streams/dashboard/static): no build step, no CDN.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from streams.config.settings import Settings
from streams.dashboard import data
from streams.errors import BadRequest, ConfigurationError
from streams.ops.totals import fetch_totals, output_columns, to_csv

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8088
PUBLIC_PATHS = frozenset({"/healthz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SETTINGS, POOL, TOKEN, DLQ = (
    web.AppKey("settings", Settings),
    web.AppKey("pool", asyncpg.Pool),
    web.AppKey("token", str),
    web.AppKey("dlq", data.DlqStatus),
)
#: Postgres is away or refuses us (not a bug in a query): 503, the page can retry later.
_UNAVAILABLE = (
    OSError,  # includes TimeoutError (command_timeout)
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _authorized(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    presented = value.strip()
    if scheme.lower() == "basic":
        try:
            presented = base64.b64decode(presented, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.encode(), token.encode())


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token check, security headers, and errors as JSON (never a traceback to the client)."""
    response = await _answer(request, handler)
    response.headers.update(_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[TOKEN]
    if token and request.path not in PUBLIC_PATHS:
        if not _authorized(request.headers.get("Authorization", ""), token):
            response = _error(401, "authentication required: send Authorization: Bearer <token>")
            response.headers.add("WWW-Authenticate", 'Basic realm="billing dashboard", charset="UTF-8"')
            response.headers.add("WWW-Authenticate", 'Bearer realm="billing dashboard"')
            return response
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc), field=exc.field)
    except asyncpg.DataError as exc:  # a value Postgres cannot take (all values are the request's)
        log.info("refused a value on %s: %s", request.path, type(exc).__name__)
        return _error(400, "a parameter holds a value the database cannot take (e.g. a NUL byte)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except asyncpg.UndefinedTableError:
        return _error(503, "table daily_billing_records does not exist; run `billing migrate`")
    except _UNAVAILABLE as exc:
        log.warning("database error on %s: %r", request.path, exc)
        return _error(503, "the billing database is not available; try again shortly")
    except Exception:
        log.exception("dashboard error on %s", request.path)
        return _error(500, "internal error (details are in the dashboard's log)")


async def _view(
    request: web.Request, conn: asyncpg.Connection, by_choices: tuple[str, ...] = data.CHART_BY
) -> data.View:
    params = {name: request.query.getall(name) for name in request.query}
    view = data.parse_view(params, by_choices)
    await data.check_known(conn, view)
    return view


async def daily(request: web.Request) -> web.Response:
    """Stacked chart data: per day, the chosen metric (a count, or the exact cost) per provider,
    charge type, model or account."""
    async with request.app[POOL].acquire() as conn:
        view = await _view(request, conn)
        rows = await fetch_totals(conn, view.grouped("date", view.by))
    return web.json_response(data.chart(rows, view.by, view.metric))


async def rows(request: web.Request) -> web.Response:
    """Table: one line per stored row (at most TABLE_LIMIT) and the grand total of all of them."""
    async with request.app[POOL].acquire() as conn:
        view = await _view(request, conn)
        lines = await data.fetch_limited(conn, view.grouped(*data.TABLE_GROUP_BY), data.TABLE_LIMIT + 1)
        total = await fetch_totals(conn, view.grouped())
    return web.json_response(
        {
            "rows": [data.plain(r) for r in lines[: data.TABLE_LIMIT]],
            "truncated": len(lines) > data.TABLE_LIMIT,
            "total": data.plain(total[0]) if total else None,
        }
    )


async def top(request: web.Request) -> web.Response:
    """Who costs the most over the selection: the top accounts (by=account) or users (by=user),
    largest cost first, at most TOP_LIMIT of them."""
    async with request.app[POOL].acquire() as conn:
        view = await _view(request, conn, data.TOP_BY)
        found = await fetch_totals(conn, view.grouped(*data.top_group(view.by)))
    return web.json_response({"by": view.by, **data.top(found)})


async def rows_csv(request: web.Request) -> web.Response:
    """All table rows as CSV, the same columns and format as `billing totals --format csv`."""
    async with request.app[POOL].acquire() as conn:
        view = await _view(request, conn)
        q = view.grouped(*data.TABLE_GROUP_BY)
        found = await fetch_totals(conn, q)
    span = [d.isoformat() for d in (q.date_from, q.date_to) if d is not None]
    name = "_".join(["billing", *span]) + ".csv"  # only digits and dashes: safe in the header
    return web.Response(
        text=to_csv(found, output_columns(q)),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def state(request: web.Request) -> web.Response:
    """Pipeline state: open days (dates with provisional rows) and the DLQ by reason."""
    if request.query:
        raise BadRequest("/api/state takes no parameters")
    async with request.app[POOL].acquire() as conn:
        days = await data.day_list(conn)
    open_days = [{"date": d["date"].isoformat(), "rows": d["rows"]} for d in days if not d["final"]]
    return web.json_response({"open_days": open_days, "dlq": await request.app[DLQ].get()})


async def meta(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return web.json_response(await data.meta(conn, request.app[SETTINGS]))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _pool(app: web.Application) -> AsyncIterator[None]:
    # Connect lazily: the page and /healthz work while Postgres is away; queries answer 503.
    app[POOL] = asyncpg.create_pool(
        app[SETTINGS].dsn,
        min_size=0,
        max_size=4,
        command_timeout=30,
        server_settings={"default_transaction_read_only": "on", "application_name": "billing-dashboard"},
    )
    await app[POOL]
    yield
    await app[POOL].close()


def check_token(token: str | None) -> None:
    """Refuse a token that is set but blank: an empty BILLING_DASHBOARD_TOKEN once turned
    authentication off without a word, and a token of spaces is no secret."""
    if token is not None and not token.strip():
        raise ConfigurationError(
            "BILLING_DASHBOARD_TOKEN is set but blank: set a real token, or unset it to serve without one"
        )


def create_app(settings: Settings, token: str | None = None) -> web.Application:
    """The dashboard application (tests run it in-process; the CLI serves it)."""
    check_token(token)
    app = web.Application(middlewares=[guard])
    app[SETTINGS], app[TOKEN], app[DLQ] = settings, token or "", data.DlqStatus(settings)
    app.cleanup_ctx.append(_pool)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/meta", meta)
    app.router.add_get("/api/daily", daily)
    app.router.add_get("/api/rows", rows)
    app.router.add_get("/api/rows.csv", rows_csv)
    app.router.add_get("/api/top", top)
    app.router.add_get("/api/state", state)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app
