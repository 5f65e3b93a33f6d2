"""`GET /v1/usage` (windowed, grouped usage) and `GET /v1/usage/changes` (the invoice feed).

A window is `final` when every one of its days within [from, to] is closed (the worker's
calendar, billing_calendar), so its numbers change only by late charges, which are counted apart.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from streams.api.auth import Caller, readable_accounts, reader
from streams.api.errors import AUTH_RESPONSES, ErrorBody, retry_after
from streams.api.usage_models import ChangedRow, ChangesPage, Group, Usage, UsagePage, UsageWindow
from streams.api.usage_sql import (
    DIMENSIONS,
    HORIZON_SQL,
    UsageQuery,
    Window,
    build_changes_sql,
    build_usage_sql,
)
from streams.errors import ApiError
from streams.ops.totals import GROUP_COLUMNS, METRICS, parse_group_by
from streams.sink.sql import READ_CLOSED

router = APIRouter()
MAX_LIMIT, MAX_DAYS = 1000, 3660
Values = Annotated[list[str], Query()]


def _window_end(start: date, window: Window) -> date:
    if window == "day":
        return start + timedelta(days=1)
    if window == "week":
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def _usage(row: Any) -> Usage:
    return Usage(**{m: row[m] for m in METRICS})


def _filters(
    caller: Caller, account: list[str], user: list[str], provider: list[str], charge_type: list[str]
) -> dict[str, list[str]]:
    return {
        "account": readable_accounts(caller, account),
        "user": user,
        "provider": provider,
        "charge_type": charge_type,
    }


async def _fetch(request: Request, sql: str, *params: Any) -> list[asyncpg.Record]:
    service = request.app.state.service
    try:
        rows: list[asyncpg.Record] = await service.pool.fetch(sql, *params)
        return rows
    except (
        OSError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
    ) as exc:
        raise ApiError(
            503,
            "postgres_unavailable",
            f"Postgres is unavailable ({type(exc).__name__})",
            retry_after(service.settings.api_retry_after.total_seconds()),
        ) from None


def _page_link(request: Request, **changes: Any) -> str:
    return str(request.url.include_query_params(**changes))


async def _usage_page(request: Request, q: UsageQuery) -> UsagePage:
    service = request.app.state.service
    sql, params = build_usage_sql(q)
    rows = await _fetch(request, sql, *params)
    closed = (await _fetch(request, READ_CLOSED) or [None])[0]  # the worker's own query of the calendar
    closed_through = closed["closed_through"] if closed is not None else None
    data = []
    for row in rows[: q.limit]:
        end = _window_end(row["window_start"], q.window)
        last = min(end - timedelta(days=1), q.date_to)
        group = Group(**{g: row[GROUP_COLUMNS[g]] for g in q.group_by})
        final = closed_through is not None and last <= closed_through
        data.append(
            UsageWindow(start=row["window_start"], end=end, final=final, group=group, usage=_usage(row))
        )
    more = len(rows) > q.limit
    return UsagePage(
        timezone=service.settings.timezone,
        window=q.window,
        **{"from": q.date_from, "to": q.date_to},
        group_by=list(q.group_by),
        data=data,
        next=_page_link(request, offset=q.offset + q.limit) if more else None,
    )


@dataclass(frozen=True)
class Shape:
    """What a usage request asks for besides its filters: days, window, grouping, page."""

    date_from: date
    date_to: date
    window: Window
    group_by: tuple[str, ...]
    limit: int
    offset: int

    def query(self, filters: dict[str, list[str]]) -> UsageQuery:
        return UsageQuery(
            self.date_from, self.date_to, self.window, self.group_by, filters, self.limit, self.offset
        )


def usage_shape(
    request: Request,
    date_from: Annotated[
        date | None, Query(alias="from", description="first day (default: to - 30 days)")
    ] = None,
    date_to: Annotated[
        date | None, Query(alias="to", description="last day, inclusive (default: today)")
    ] = None,
    window: Window = "day",
    group_by: Annotated[str, Query(description="comma-separated: account,user,provider,charge_type")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Shape:
    """The parameters both usage routes share, checked once (a FastAPI dependency)."""
    to = date_to or datetime.now(request.app.state.service.settings.zone).date()
    start = date_from or to - timedelta(days=30)
    if start > to:
        raise ApiError(400, "bad_request", f"from ({start}) is after to ({to})")
    if (to - start).days > MAX_DAYS:
        raise ApiError(400, "bad_request", f"at most {MAX_DAYS} days per query")
    names = parse_group_by(group_by)
    if any(n not in DIMENSIONS for n in names) or len(set(names)) != len(names):
        raise ApiError(400, "bad_request", f"group_by takes distinct names among {', '.join(DIMENSIONS)}")
    return Shape(start, to, window, names, limit, offset)


READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    400: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
usage_route = partial(
    router.get, response_model=UsagePage, response_model_by_alias=True, responses=READ_RESPONSES
)


@usage_route("/v1/usage", operation_id="get_usage", summary="Usage per window and group")
async def get_usage(
    request: Request,
    caller: Caller = Depends(reader),
    shape: Shape = Depends(usage_shape),
    account: Values = [],  # noqa: B006 (FastAPI copies defaults per request)
    user: Values = [],  # noqa: B006
    provider: Values = [],  # noqa: B006
    charge_type: Values = [],  # noqa: B006
) -> UsagePage:
    """Tokens and counts per day, week or month of BILLING_TIMEZONE, grouped as asked. A
    portal key (read:account=X) sees account X only, whatever the parameters say."""
    return await _usage_page(request, shape.query(_filters(caller, account, user, provider, charge_type)))


@usage_route(
    "/v1/accounts/{account_id}/usage", operation_id="get_account_usage", summary="One account's usage"
)
async def get_account_usage(
    request: Request, account_id: str, caller: Caller = Depends(reader), shape: Shape = Depends(usage_shape)
) -> UsagePage:
    """`GET /v1/usage?account=<account_id>`, for a customer portal's URL scheme."""
    return await _usage_page(request, shape.query(_filters(caller, [account_id], [], [], [])))


def _decode_cursor(text: str) -> tuple[datetime, int]:
    try:
        stamp, row_id = json.loads(base64.urlsafe_b64decode(text.encode() + b"=="))
        return datetime.fromisoformat(stamp), int(row_id)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, "bad_cursor", "since is not a cursor this API returned") from None


def _encode_cursor(stamp: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([stamp.isoformat(), row_id]).encode()).decode().rstrip("=")


@router.get(
    "/v1/usage/changes",
    operation_id="get_usage_changes",
    summary="Daily rows revised since a cursor (for invoice exports)",
    response_model=ChangesPage,
    responses=READ_RESPONSES,
)
async def get_changes(
    request: Request,
    caller: Caller = Depends(reader),
    since: Annotated[
        str | None, Query(description="a cursor from a previous page; absent: from the start")
    ] = None,
    account: Values = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
) -> ChangesPage:
    """Every daily row written after the cursor, in write order: an export keeps the last
    `cursor` and asks again; a revised row comes again with its new revision."""
    after = _decode_cursor(since) if since else None
    filters = _filters(caller, account, [], [], [])
    horizon = (await _fetch(request, HORIZON_SQL))[0][0]
    sql, params = build_changes_sql(after, horizon, filters, limit)
    rows = await _fetch(request, sql, *params)
    data = [
        ChangedRow(
            id=r["id"],
            date=r["date"],
            group=Group(**{d: r[GROUP_COLUMNS[d]] for d in DIMENSIONS}),
            usage=_usage(r),
            revision=r["revision"],
            final=r["finalized_at"] is not None,
            finalized_at=r["finalized_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    cursor = _encode_cursor(data[-1].updated_at, data[-1].id) if data else (since or "")
    return ChangesPage(
        data=data, cursor=cursor, has_more=len(rows) > limit, next=_page_link(request, since=cursor)
    )
