"""The dashboard's read side: query parameters -> `TotalsQuery` -> JSON-ready answers.

Every query goes through `streams.ops.totals.build_totals_sql` (whitelisted columns, bound values),
so the dashboard adds no SQL of its own beyond a bound LIMIT. A parameter that is unknown,
repeated, malformed or names a value no record has is a `BadRequest` with a message for humans:
a filter that silently matches nothing would show an empty chart that looks like "no usage".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from schemas.charge import SLUG_PATTERN
from streams.config.settings import Settings
from streams.errors import BadRequest
from streams.ops.totals import GROUP_COLUMNS, METRICS, TotalsQuery, build_totals_sql, fetch_totals

FILTERS = ("account", "user", "provider", "charge_type")
CHART_BY = ("provider", "charge_type", "model", "account")  # by model: read from the rows by model
#: What the chart can stack: the integer counts, or the exact cost (summed as nano-units).
CHART_METRICS = (*METRICS, "cost")
CHART_SERIES = 8  # the largest series keep their colour; the rest are one "other" stack per day
TOP_BY = ("account", "user")  # "top users" are users of an account: a user id is per account
TOP_LIMIT = 10
TABLE_GROUP_BY = ("date", "account", "user", "provider", "charge_type")  # one line per stored row
TABLE_LIMIT = 2000  # rows sent to the page; the CSV has them all
LIST_LIMIT = 500  # values offered in a filter's suggestions
_SINGLE = ("from", "to", "by", "metric")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SLUG = re.compile(SLUG_PATTERN)


@dataclass(frozen=True)
class View:
    """What one request asks for: filters as a TotalsQuery, plus chart options."""

    query: TotalsQuery
    by: str = "provider"
    metric: str = "total_tokens"

    def grouped(self, *names: str, final_only: bool = False) -> TotalsQuery:
        return replace(self.query, group_by=names, final_only=final_only)


def _quote(text: str) -> str:
    """User text in a message: quoted, and short (a message must not echo a megabyte back)."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _day(name: str, text: str) -> date:
    if _DAY.fullmatch(text):
        with contextlib.suppress(ValueError):  # 2026-02-30
            return date.fromisoformat(text)
    raise BadRequest(f"{name}: {_quote(text)} is not a date; use YYYY-MM-DD", name)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _value(name: str, text: str) -> str:
    value = text.strip()
    if "\x00" in value or not _utf8(value):
        # Postgres text cannot hold NUL nor a lone surrogate, so no stored id has one.
        raise BadRequest(f"{name}: {_quote(text)} holds a NUL byte or invalid UTF-8", name)
    if len(value) > 128:
        raise BadRequest(f"{name}: value longer than 128 characters", name)
    if name in ("provider", "charge_type"):
        value = value.lower()
        if not _SLUG.fullmatch(value):
            raise BadRequest(f"{name}: {_quote(text)} is not a valid slug (letters, digits, _.:-)", name)
    return value


def parse_view(params: Mapping[str, Sequence[str]], by_choices: Sequence[str] = CHART_BY) -> View:
    """Validate query parameters (name -> all its values). Empty values mean "any" (a form's
    "all" option); filters may repeat to select several values; the rest may not. `by_choices`
    differs per endpoint (the chart stacks by provider..., the top table ranks accounts or users);
    the first choice is the default."""
    valid = (*FILTERS, *_SINGLE)
    picked: dict[str, list[str]] = {name: [] for name in FILTERS}
    single: dict[str, str] = {}
    for name, values in params.items():
        if name not in valid:
            raise BadRequest(f"unknown parameter {_quote(name)}; valid parameters: {', '.join(valid)}", name)
        texts = [v for v in values if v.strip()]
        if name in FILTERS:
            picked[name] += [_value(name, v) for v in texts]
        elif len(texts) > 1:
            raise BadRequest(f"{name} may be given once", name)
        elif texts:
            single[name] = texts[0].strip()
    by, metric = single.get("by", by_choices[0]), single.get("metric", "total_tokens")
    if by not in by_choices:
        raise BadRequest(f"by: {_quote(by)} is not one of {', '.join(by_choices)}", "by")
    if metric not in CHART_METRICS:
        raise BadRequest(f"metric: {_quote(metric)} is not one of {', '.join(CHART_METRICS)}", "metric")
    start = _day("from", single["from"]) if "from" in single else None
    end = _day("to", single["to"]) if "to" in single else None
    if start and end and start > end:
        raise BadRequest(f"empty date range: from {start} is after to {end}", "from")
    filters: dict[str, Any] = {k: tuple(dict.fromkeys(v)) for k, v in picked.items()}
    query = TotalsQuery(**filters, date_from=start, date_to=end)
    return View(query, by, metric)


async def check_known(conn: asyncpg.Connection, view: View) -> None:
    """Refuse filter values that no record has (checked against the whole table, not the range)."""
    for name in FILTERS:
        wanted: tuple[str, ...] = getattr(view.query, name)
        if not wanted:
            continue
        only: dict[str, Any] = {name: wanted}
        rows = await fetch_totals(conn, TotalsQuery(group_by=(name,), **only))
        known = {r[GROUP_COLUMNS[name]] for r in rows}
        missing = [v for v in wanted if v not in known]
        if missing:
            label = name.replace("_", " ")
            raise BadRequest(
                f"unknown {label} {', '.join(map(_quote, missing))}: no billing records have it", name
            )


async def fetch_limited(conn: asyncpg.Connection, q: TotalsQuery, limit: int) -> list[dict[str, Any]]:
    """The builder's query with a bound LIMIT (the page shows at most `limit` rows)."""
    sql, params = build_totals_sql(q)
    rows = await conn.fetch(f"{sql}\nLIMIT ${len(params) + 1}::bigint", *params, limit)
    return [dict(r) for r in rows]


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"  # money: exact decimal text, never a float
    return value.isoformat() if isinstance(value, date) else value


def plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready: dates as ISO text, the cost as decimal text; a row is `revised` when late
    charges were added to it."""
    out = {k: _json_value(v) for k, v in row.items()}
    if "late_charge_count" in out:
        out["revised"] = int(out["late_charge_count"]) > 0
    return out


def cost_nanos(cost: Decimal) -> int:
    """A row's cost (nine decimals, as `build_totals_sql` rounds it) as whole nano-units, so
    costs add up exactly as integers; a cost with a finer digit is a bug, never truncated."""
    nanos = cost.scaleb(9)
    if nanos != nanos.to_integral_value():
        raise ValueError(f"cost {cost} has a digit below the nano-unit")
    return int(nanos)


def cost_text(nanos: int) -> str:
    """Nano-units back to the decimal text every other cost is shown as (nine decimals)."""
    return f"{Decimal(nanos).scaleb(-9):f}"


def _amount(row: Mapping[str, Any], metric: str) -> int:
    return cost_nanos(row["cost"]) if metric == "cost" else int(row[metric])


def chart(
    rows: Sequence[Mapping[str, Any]], by: str, metric: str, keep: int = CHART_SERIES
) -> dict[str, Any]:
    """Daily stacks: per date, the metric per series, and whether the day is final/revised.

    Integers are summed as integers and cost as nano-units, then cost goes out as decimal text
    (a JSON number is a float to the page). Beyond `keep` series (by their total over the range,
    e.g. hundreds of accounts) the smaller ones are summed into each day's `other`, kept apart
    from `stacks` because any name, "(other)" included, can be a real account id; `folded` says
    how many series were summed."""
    column = GROUP_COLUMNS[by]
    totals: Counter[str] = Counter()
    for r in rows:
        totals[r[column]] += _amount(r, metric)
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    kept = set(ranked[:keep]) if len(ranked) > keep else set(ranked)
    shown = cost_text if metric == "cost" else int
    days: dict[date, dict[str, Any]] = {}
    for r in rows:
        day = days.setdefault(
            r["date"], {"date": r["date"].isoformat(), "stacks": Counter(), "other": 0, "total": 0}
        )
        if r[column] in kept:
            day["stacks"][r[column]] += _amount(r, metric)
        else:
            day["other"] += _amount(r, metric)
        day["total"] += _amount(r, metric)
        day["final"] = day.get("final", True) and bool(r["final"])
        day["revised"] = day.get("revised", False) or int(r["late_charge_count"]) > 0
    for day in days.values():
        day["stacks"] = {name: shown(v) for name, v in day["stacks"].items()}
        day["other"], day["total"] = shown(day["other"]), shown(day["total"])
    series = sorted(kept)
    currency = max((r["currency"] for r in rows if r.get("currency")), default=None)
    return {
        "by": by,
        "metric": metric,
        "currency": currency,
        "series": series,
        "folded": len(ranked) - len(kept),
        "days": [days[d] for d in sorted(days)],
    }


def top(rows: Sequence[Mapping[str, Any]], limit: int = TOP_LIMIT) -> dict[str, Any]:
    """The `limit` largest costs (exact Decimal order; ties by name so the order is stable) and
    how many there were in all."""
    ranked = sorted(
        rows, key=lambda r: (-r["cost"], *(str(r[c]) for c in ("account_id", "user_id") if c in r))
    )
    return {"rows": [plain(r) for r in ranked[:limit]], "count": len(rows)}


def top_group(by: str) -> tuple[str, ...]:
    """Group-by names for a top table: a user is ranked with its account."""
    return ("account",) if by == "account" else ("account", "user")


async def day_list(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every date with records, whole table: its row count and whether all rows are final."""
    return await fetch_totals(conn, TotalsQuery(group_by=("date",)))


async def meta(conn: asyncpg.Connection, settings: Settings) -> dict[str, Any]:
    """What the filter form offers: known values (capped), the date span, metrics, time zone."""
    out: dict[str, Any] = {
        "timezone": settings.timezone,
        "metrics": list(CHART_METRICS),
        "chart_by": list(CHART_BY),
    }
    for name in FILTERS:
        rows = await fetch_limited(conn, TotalsQuery(group_by=(name,)), LIST_LIMIT + 1)
        out[name] = [r[GROUP_COLUMNS[name]] for r in rows[:LIST_LIMIT]]
        out[f"{name}_truncated"] = len(rows) > LIST_LIMIT
    days = await day_list(conn)
    out["first_date"] = days[0]["date"].isoformat() if days else None
    out["last_date"] = days[-1]["date"].isoformat() if days else None
    return out


class DlqStatus:
    """DLQ counts by reason, read from Kafka with `billing dlq`'s reader and cached, because a
    scan reads the whole topic. Any failure (no broker, no topic, auth) reads "unavailable":
    the dashboard is about Postgres and must not fail with Kafka."""

    def __init__(self, settings: Settings, ttl: float = 30.0, timeout: float = 10.0) -> None:
        self.settings, self.ttl, self.timeout = settings, ttl, timeout
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self._lock:  # concurrent page loads share one scan
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.ttl:
                self._cached = (now, await self._scan())
            return self._cached[1]

    async def _scan(self) -> dict[str, Any]:
        from streams.ops.dlq import scan

        topic = self.settings.dlq_topic
        try:
            result = await asyncio.wait_for(scan(self.settings), self.timeout)
        except Exception as exc:  # any Kafka trouble: say so, keep serving Postgres data
            logging.getLogger(__name__).info("DLQ %s unavailable: %r", topic, exc)
            why = "no topic" if isinstance(exc, LookupError) else type(exc).__name__
            return {"status": "unavailable", "topic": topic, "why": why}
        reasons = Counter(letter.reason for letter in result.letters)
        return {
            "status": "ok",
            "topic": topic,
            "total": sum(reasons.values()),
            "by_reason": dict(sorted(reasons.items())),
            "unreadable": result.unreadable,
        }
