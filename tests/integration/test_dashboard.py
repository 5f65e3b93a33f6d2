"""`billing dashboard` against a real Postgres holding known rows, driven by real headless Chromium.

The browser test reads what the page shows (text of the cards, table cells and chart bars),
compares it with sums computed here from the inserted rows, changes filters, downloads the CSV,
and saves the screenshot the README uses (docs/dashboard.png). The API tests pin the contract
without a browser: 400 with a message for every bad parameter, 401 without the token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import dataclasses
import io
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from streams.charge.dead_letter import encode, make_dead_letter
from streams.config.settings import Settings
from streams.dashboard.server import create_app
from streams.kafka.topics import ensure_topics
from streams.ops.totals import GROUP_COLUMNS, METRICS, MONEY
from tests.support import ROOT, free_port, produce_raw, unique

pytestmark = pytest.mark.integration
FIRST = date(2026, 11, 10)
DAYS = [FIRST + timedelta(days=i) for i in range(14)]
OPEN = set(DAYS[-2:])  # the last two days are still open: provisional rows
# Shown as text (the page never parses data as HTML), bound as a parameter in SQL.
ODD_USER = "o'brien <b>&amp;<img src=x onerror=\"document.title='pwned'\">"
NUMBERS = METRICS  # the token counts, charge_count and late_charge_count, as `billing totals` sums them
KEY = ("account_id", "user_id", "provider", "date", "charge_type")


def known_rows() -> list[dict[str, Any]]:
    """Deterministic rows: 14 days, 2 accounts, 5 users, 3 providers, 3 charge types."""
    rng = random.Random(8)
    users = [("acme", "alice"), ("acme", "bob")] + [("globex", u) for u in ("carol", "dave", ODD_USER)]
    kinds = [("openai", "completion"), ("openai", "embedding"), ("anthropic", "completion")]
    kinds += [("anthropic", "tool"), ("googleai", "completion")]
    rows = []
    for day, (account, user), (provider, charge_type) in itertools.product(DAYS, users, kinds):
        if rng.random() < 0.45:
            continue
        prompt = rng.randrange(1_000, 400_000)
        completion = 0 if charge_type == "embedding" else rng.randrange(100, 90_000)
        late = rng.randrange(1, 4) if day not in OPEN and rng.random() < 0.06 else 0
        rows.append(
            dict(zip(KEY, (account, user, provider, day, charge_type), strict=True))
            | {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            | {"cached_tokens": rng.randrange(0, prompt // 2), "charge_count": rng.randrange(1, 300)}
            | {"reasoning_tokens": 0 if provider == "anthropic" else rng.randrange(0, completion + 1)}
            | {"late_charge_count": late, "revision": late}
            # an odd number of nano-units: a cost shown through a float would lose the last digit
            | {"cost_nanos": prompt * 2_500 + completion * 10_000 + 1, "currency": "USD"}
            | {"unpriced_charge_count": rng.randrange(0, 3)}
            | {"finalized_at": None if day in OPEN else datetime(2026, 11, 24, tzinfo=UTC)}
            | {"cache_write_tokens": rng.randrange(0, prompt // 2) if provider == "anthropic" else 0}
        )
    return rows


ROWS = known_rows()


async def insert(url: str, rows: list[dict[str, Any]]) -> None:
    columns, conn = list(rows[0]), await asyncpg.connect(url)
    records = [tuple(r[c] for c in columns) for r in rows]
    try:
        await conn.copy_records_to_table("daily_billing_records", records=records, columns=columns)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def serving(settings: Settings, token: str | None = None) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(settings, token), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def settings_for(database: str, bootstrap: str = "127.0.0.1:1", name: str | None = None) -> Settings:
    name = name or unique("dash")
    topics = {"charges_topic": f"{name}-charges", "dlq_topic": f"{name}-charges.dlq", "partitions": 2}
    return Settings(_env_file=None, database_url=database, kafka_bootstrap=bootstrap, **topics)  # type: ignore[call-arg]


@pytest.fixture
async def loaded(database: str) -> str:
    await insert(database, ROWS)
    return database


def sums(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, int]]:
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(NUMBERS, 0))
    for r in rows:
        for n in NUMBERS:
            out[tuple(r[k] for k in keys)][n] += r[n]
    return dict(out)


def shown(text: str) -> int:
    return int(text.replace(",", ""))


def cost_of(rows: list[dict[str, Any]]) -> Decimal:
    """The exact cost of rows, summed here as integer nano-units (independent of the server)."""
    return Decimal(sum(r["cost_nanos"] for r in rows)).scaleb(-9)


def top_costs(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    """(cost, *key) largest first, ties by key: what a top table must list, computed here."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return sorted(((cost_of(g), *k) for k, g in groups.items()), key=lambda t: (-t[0], *t[1:]))


# ---------------------------------------------------------------------------------------- browser
#: Offline and as root: no sandbox, no background traffic (no internet here), a fresh profile.
CHROMIUM_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-sync "
    "--disable-background-networking --disable-component-update --disable-dev-shm-usage "
    "--hide-scrollbars --window-size=1400,1000"
).split()


def _browser(download_dir: Path) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (test extra)")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    return webdriver.Chrome(service=Service(driver), options=options)


TOP_JS = """
return [...document.querySelectorAll('#top-' + arguments[0] + ' tbody tr')].map(tr =>
  [tr.dataset.cost, tr.dataset.account, tr.dataset.user || null, tr.querySelector('[data-col=cost]').textContent]);
"""
TABLE_JS = """
return [...document.querySelectorAll('#records tbody tr')].map(tr => ({
  cls: tr.className,
  cells: Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.textContent]))}));
"""
CHART_JS = """
return [...document.querySelectorAll('#chart g.day')].map(g => ({
  date: g.dataset.date, total: g.dataset.total, final: g.dataset.final, revised: g.dataset.revised,
  bars: Object.fromEntries([...g.querySelectorAll('rect[data-series]')].map(r => [r.dataset.series, r.dataset.value]))}));
"""


def _wait_ready(driver: Any, query_part: str = "") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state, query = driver.execute_script(
            "return [document.body.dataset.state, document.body.dataset.query]"
        )
        if state in ("ready", "error") and query is not None and query_part in query:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"page not ready for {query_part!r}: {driver.find_element('css selector', '#error').text}"
    )


def _check_page(
    driver: Any, rows: list[dict[str, Any]], by: str = "provider", metric: str = "total_tokens"
) -> None:
    """Cards, top tables, records table and chart show exactly the sums of `rows`."""
    total = sum(r["total_tokens"] for r in rows)
    assert shown(driver.find_element("css selector", "#card-total .value").text) == total
    cost = driver.find_element("css selector", "#card-cost .value")
    assert Decimal(cost.get_attribute("data-value")) == Decimal(sum(r["cost_nanos"] for r in rows)).scaleb(-9)
    assert Decimal(cost.text.removeprefix("USD ").replace(",", "")) == Decimal(
        cost.get_attribute("data-value")
    )
    unpriced = driver.find_element("css selector", "#card-cost .detail").get_attribute("data-unpriced")
    assert int(unpriced) == sum(r["unpriced_charge_count"] for r in rows)
    table = driver.execute_script(TABLE_JS)
    got = {}
    for line in table:
        c = line["cells"]
        key = (date.fromisoformat(c["date"]), c["account_id"], c["user_id"], c["provider"], c["charge_type"])
        got[key] = {n: shown(c[n]) for n in NUMBERS} | {"status": c["status"], "cls": line["cls"]}
        got[key]["cost"] = Decimal(c["cost"].replace(",", ""))
    want = {}
    for r in rows:
        day, revised = (
            ("final" if r["finalized_at"] else "provisional"),
            " revised" * bool(r["late_charge_count"]),
        )
        status = {"status": day + revised.strip(), "cls": day + revised}  # badge texts, row classes
        want[tuple(r[k] for k in ("date", "account_id", "user_id", "provider", "charge_type"))] = (
            {n: r[n] for n in NUMBERS} | status | {"cost": Decimal(r["cost_nanos"]).scaleb(-9)}
        )
    assert got == want
    for by_top, keys in (("account", ("account_id",)), ("user", ("account_id", "user_id"))):
        want_top = top_costs(rows, *keys)[:10]
        got_top = driver.execute_script(TOP_JS, by_top)
        assert [(Decimal(c), a, *([u] if by_top == "user" else [])) for c, a, u, _ in got_top] == want_top
        assert all(
            Decimal(text.removeprefix("USD ").replace(",", "")) == Decimal(c) for c, *_, text in got_top
        )
    bars = {d["date"]: d for d in driver.execute_script(CHART_JS)}
    value = (lambda text: Decimal(text)) if metric == "cost" else shown
    expected = (lambda g: cost_of(g)) if metric == "cost" else (lambda g: sum(r["total_tokens"] for r in g))
    by_day: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_day[(r["date"], r[GROUP_COLUMNS[by]])].append(r)
    for (day, series), group in by_day.items():
        assert value(bars[day.isoformat()]["bars"][series]) == expected(group), (day, series)
    for (day,), s in sums(rows, "date").items():
        bar = bars[day.isoformat()]
        assert value(bar["total"]) == expected([r for r in rows if r["date"] == day])
        assert bar["final"] == ("false" if day in OPEN else "true")
        assert bar["revised"] == ("true" if s["late_charge_count"] else "false")
    assert len(bars) == len({r["date"] for r in rows})


def _download(driver: Any, download_dir: Path) -> str:
    """Click the page's CSV link; the file Chromium saves (renamed from .crdownload when done)."""
    driver.find_element("id", "csv").click()
    deadline = time.monotonic() + 20
    while not (files := list(download_dir.glob("*.csv"))):
        assert time.monotonic() < deadline, "the CSV download never arrived"
        time.sleep(0.1)
    return files[0].read_bytes().decode()  # as served: CSV lines end in CRLF


def drive(base: str, download_dir: Path, screenshot: Path) -> tuple[str, str]:
    """The whole browser session (blocking; the test runs it in a thread while the server serves).
    Returns the downloaded CSV and the URL the page links it from."""
    from selenium.webdriver.support.ui import Select

    driver = _browser(download_dir)
    try:
        driver.get(base + "/")
        _wait_ready(driver)
        _check_page(driver, ROWS)
        deadline = time.monotonic() + 30
        while driver.execute_script("return document.querySelector('#pipeline').dataset.state") == "loading":
            assert time.monotonic() < deadline, "pipeline state never loaded"
            time.sleep(0.1)
        open_days = driver.execute_script(
            "return [...document.querySelectorAll('#open-days li')].map(li => li.dataset.date)"
        )
        assert open_days == [d.isoformat() for d in sorted(OPEN)]
        dlq = driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#dlq li')]"
            ".map(li => [li.dataset.reason, li.dataset.count]))"
        )
        assert dlq == {"invalid_json": "2", "total_mismatch": "1"}
        assert driver.title != "pwned" and not driver.find_elements("css selector", "table img")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(height, 1400))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot))

        Select(driver.find_element("name", "provider")).select_by_value("anthropic")
        _wait_ready(driver, "provider=anthropic")
        anthropic = [r for r in ROWS if r["provider"] == "anthropic"]
        _check_page(driver, anthropic)
        Select(driver.find_element("name", "by")).select_by_value("charge_type")
        _wait_ready(driver, "by=charge_type")
        _check_page(driver, anthropic, by="charge_type")
        Select(driver.find_element("name", "metric")).select_by_value("cost")
        _wait_ready(driver, "metric=cost")
        Select(driver.find_element("name", "by")).select_by_value("account")
        _wait_ready(driver, "by=account")
        _check_page(driver, anthropic, by="account", metric="cost")

        href = driver.find_element("id", "csv").get_attribute("href")
        downloaded = _download(driver, download_dir)

        driver.get(base + "/?provider=nope")
        _wait_ready(driver, "provider=nope")
        assert "unknown provider 'nope'" in driver.find_element("id", "error").text
        return downloaded, href
    finally:
        driver.quit()


async def test_dashboard_in_chromium(loaded: str, broker: str, tmp_path: Path) -> None:
    settings = settings_for(loaded, broker)
    await ensure_topics(settings)
    letter = make_dead_letter(
        reason="invalid_json", detail="x", topic=settings.charges_topic, partition=0, offset=0,
        index=None, key=b"acme", payload=b"{",
    )  # fmt: skip
    letters = [letter, dataclasses.replace(letter, offset=1)]
    letters += 2 * [dataclasses.replace(letter, offset=2, reason="total_mismatch")]  # a re-refusal: one
    await produce_raw(broker, settings.dlq_topic, [(b"acme", encode(x), None) for x in letters])
    screenshot = ROOT / "docs" / "dashboard.png"
    async with serving(settings) as base:
        downloaded, href = await asyncio.to_thread(drive, base, tmp_path, screenshot)
        async with aiohttp.ClientSession() as http, http.get(href) as response:
            assert downloaded == await response.text()  # the file is what the link serves
    assert "provider=anthropic" in href
    lines = list(csv.DictReader(io.StringIO(downloaded)))
    header = ["date", "account_id", "user_id", "provider", "charge_type", *NUMBERS, *MONEY, "rows", "final"]
    assert list(lines[0]) == header  # the columns of `billing totals --format csv`
    assert {line["rows"] for line in lines} == {"1"}  # one stored row per line
    got = sorted((*(line[k] for k in KEY), *(int(line[n]) for n in NUMBERS), line["final"]) for line in lines)
    want = sorted(
        (*(str(r[k]) for k in KEY), *(r[n] for n in NUMBERS), "false" if r["date"] in OPEN else "true")
        for r in ROWS
        if r["provider"] == "anthropic"
    )
    assert got == want
    assert screenshot.stat().st_size > 10_000


# -------------------------------------------------------------------------------------------- API


async def _get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as response:
        text = await response.text()
        assert "Traceback" not in text
        is_json = response.content_type == "application/json"
        return response.status, (await response.json() if is_json else text)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("provider=nope", "unknown provider 'nope'"),
        ("account=x%27%29%3B+DROP+TABLE+daily_billing_records%3B+--", "unknown account"),
        ("provider=Open+AI", "not a valid slug"),
        ("from=2026-13-01", "from: '2026-13-01' is not a date"),
        ("from=2026-11-20&to=2026-11-01", "empty date range"),
        ("acount=acme", "unknown parameter 'acount'"),
        ("by=user", "by: 'user' is not one of provider, charge_type, model, account"),
        ("metric=dollars", "metric: 'dollars' is not one of"),
        ("from=2026-11-01&from=2026-11-02", "from may be given once"),
        ("account=acme%00", "holds a NUL byte"),
        ("user=%00", "holds a NUL byte"),
        ("user=%ED%A0%80", "unknown user"),  # aiohttp reads bad UTF-8 as U+FFFD: a 400, never a 500
    ],
)
async def test_bad_parameters_get_a_clear_400(loaded: str, query: str, message: str) -> None:
    async with serving(settings_for(loaded)) as base, aiohttp.ClientSession() as http:
        for path in ("/api/daily", "/api/rows", "/api/rows.csv"):
            status, body = await _get(http, f"{base}{path}?{query}")
            assert status == 400, (path, body)
            assert message in body["error"]
        odd = {"account": "globex", "user": ODD_USER, "from": "2026-11-10"}
        status, body = await _get(http, f"{base}/api/rows", params=odd)
        assert status == 200 and body["rows"], body  # the table survived, odd text is a value


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("by=provider", "by: 'provider' is not one of account, user"),
        ("by=account&by=user", "by may be given once"),
        ("account=nope", "unknown account 'nope'"),
        ("from=yesterday", "from: 'yesterday' is not a date"),
        ("limit=5", "unknown parameter 'limit'"),
    ],
)
async def test_top_refuses_bad_parameters(loaded: str, query: str, message: str) -> None:
    async with serving(settings_for(loaded)) as base, aiohttp.ClientSession() as http:
        status, body = await _get(http, f"{base}/api/top?{query}")
    assert status == 400 and message in body["error"], body


def many_accounts() -> list[dict[str, Any]]:
    """ROWS plus twelve small accounts (more than the top table and the chart's series show),
    two of them tied in cost, on two days."""
    extra = []
    for i in range(12):
        template = ROWS[i]
        nanos = 1_000_000_007 * (i // 2 + 1) + (0 if i in (4, 5) else i)  # accounts 4 and 5 tie
        extra.append(template | {"account_id": f"small{i:02}", "cost_nanos": nanos})
    return ROWS + extra


async def test_cost_chart_is_exact_to_the_nano_unit(database: str) -> None:
    rows = many_accounts()
    await insert(database, rows)
    async with serving(settings_for(database)) as base, aiohttp.ClientSession() as http:
        for by in ("provider", "charge_type", "account"):
            for filters in ({}, {"provider": "anthropic", "from": str(DAYS[3]), "to": str(DAYS[9])}):
                status, body = await _get(
                    http, f"{base}/api/daily", params={"metric": "cost", "by": by} | filters
                )
                assert status == 200, body
                lo, hi = (DAYS[3], DAYS[9]) if filters else (DAYS[0], DAYS[-1])
                provider = filters.get("provider")
                picked = [r for r in rows if lo <= r["date"] <= hi and provider in (None, r["provider"])]
                column = GROUP_COLUMNS[by]
                ranked = [k[1] for k in top_costs(picked, column)]
                kept = ranked[:8]
                assert body["series"] == sorted(kept)
                assert body["folded"] == max(0, len(ranked) - 8) and body["currency"] == "USD"
                for day in body["days"]:
                    on_day = [r for r in picked if r["date"].isoformat() == day["date"]]
                    assert isinstance(day["total"], str) and Decimal(day["total"]) == cost_of(on_day)
                    want = defaultdict(list)
                    for r in on_day:
                        want[r[column]].append(r)
                    assert {k: Decimal(v) for k, v in day["stacks"].items()} == {
                        k: cost_of(g) for k, g in want.items() if k in kept
                    }
                    assert Decimal(day["other"]) == cost_of([r for r in on_day if r[column] not in kept])
                assert len(body["days"]) == len({r["date"] for r in picked})


async def test_top_accounts_and_users_by_cost(database: str) -> None:
    rows = many_accounts()
    await insert(database, rows)
    async with serving(settings_for(database)) as base, aiohttp.ClientSession() as http:
        status, body = await _get(http, f"{base}/api/top")  # by=account is the default
        assert status == 200, body
        want = top_costs(rows, "account_id")
        assert body["by"] == "account" and body["count"] == len(want) == 14
        assert [(Decimal(r["cost"]), r["account_id"]) for r in body["rows"]] == want[:10]
        assert {r["currency"] for r in body["rows"]} == {"USD"}
        assert body["rows"][0]["charge_count"] == sum(
            r["charge_count"] for r in rows if r["account_id"] == want[0][1]
        )
        params = {"by": "user", "account": "globex", "to": str(DAYS[6])}
        status, body = await _get(http, f"{base}/api/top", params=params)
        assert status == 200, body
        picked = [r for r in rows if r["account_id"] == "globex" and r["date"] <= DAYS[6]]
        want = top_costs(picked, "account_id", "user_id")
        got = [(Decimal(r["cost"]), r["account_id"], r["user_id"]) for r in body["rows"]]
        assert got == want and body["count"] == 3 and ODD_USER in {r["user_id"] for r in body["rows"]}


async def test_chart_by_model_reads_the_rows_by_model(loaded: str) -> None:
    # The rows of one day split over two models, as the sink writes them beside the daily rows.
    day = [r for r in ROWS if r["date"] == DAYS[0]]
    split = [r | {"model": "gpt-4o" if i % 3 else "o3-mini"} for i, r in enumerate(day)]
    conn = await asyncpg.connect(loaded)
    try:
        columns = list(split[0])
        records = [tuple(r[c] for c in columns) for r in split]
        await conn.copy_records_to_table("daily_model_records", records=records, columns=columns)
    finally:
        await conn.close()
    async with serving(settings_for(loaded)) as base, aiohttp.ClientSession() as http:
        status, body = await _get(http, f"{base}/api/daily", params={"by": "model", "from": str(DAYS[0])})
    assert status == 200, body
    assert body["series"] == ["gpt-4o", "o3-mini"]
    [chart_day] = body["days"]
    for model in body["series"]:
        assert chart_day["stacks"][model] == sum(r["total_tokens"] for r in split if r["model"] == model)


async def test_token_is_required_when_set(loaded: str) -> None:
    async with serving(settings_for(loaded), token="s3cret-token") as base, aiohttp.ClientSession() as http:
        for path in ("/", "/api/rows", "/api/rows.csv", "/api/top", "/api/state", "/static/app.js"):
            async with http.get(base + path) as response:
                assert response.status == 401, path
                assert "Basic" in response.headers.getall("WWW-Authenticate")[0]
        for header in ("Bearer wrong", "Bearer s3cret-toke", "Token s3cret-token", "Basic !!"):
            assert (await _get(http, base + "/api/rows", headers={"Authorization": header}))[0] == 401
        good = {"Authorization": "Bearer s3cret-token"}
        status, body = await _get(http, base + "/api/rows", headers=good)
        assert status == 200 and body["total"]["total_tokens"] == sum(r["total_tokens"] for r in ROWS)
        basic = "Basic " + base64.b64encode(b"anyone:s3cret-token").decode()
        assert (await _get(http, base + "/", headers={"Authorization": basic}))[0] == 200
        assert (await _get(http, base + "/healthz"))[0] == 200  # liveness only, no data


async def test_state_says_unavailable_without_kafka_and_503_without_postgres(loaded: str) -> None:
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    async with serving(settings_for(loaded)) as base, aiohttp.ClientSession() as http:
        started = time.monotonic()
        status, body = await _get(http, base + "/api/state")
        assert status == 200 and body["dlq"]["status"] == "unavailable"
        assert time.monotonic() - started < 15
        assert [d["date"] for d in body["open_days"]] == [d.isoformat() for d in sorted(OPEN)]
    async with serving(settings_for(dead_pg)) as base, aiohttp.ClientSession() as http:
        status, body = await _get(http, base + "/api/rows")
        assert status == 503 and "not available" in body["error"]
        assert (await _get(http, base + "/"))[0] == 200


def drive_with_token(base: str, token: str, download_dir: Path) -> str:
    """A browser with the token as the password of HTTP Basic auth: page, data and CSV load."""
    driver = _browser(download_dir)
    try:
        host = base.removeprefix("http://")
        driver.get(f"http://billing:{token}@{host}/")
        _wait_ready(driver)
        assert driver.execute_script("return document.body.dataset.state") == "ready"
        assert shown(driver.find_element("css selector", "#card-total .value").text) == sum(
            r["total_tokens"] for r in ROWS
        )
        return _download(driver, download_dir)
    finally:
        driver.quit()


async def test_browser_with_token(loaded: str, tmp_path: Path) -> None:
    async with serving(settings_for(loaded), token="s3cret-token") as base:
        downloaded = await asyncio.to_thread(drive_with_token, base, "s3cret-token", tmp_path)
    assert len(downloaded.splitlines()) == len(ROWS) + 1


async def test_command_serves_on_loopback_with_env_settings(loaded: str) -> None:
    """`billing dashboard` as a process: BILLING_DASHBOARD_* read, loopback bind, token enforced."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env |= {"BILLING_DATABASE_URL": loaded, "BILLING_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    env |= {"BILLING_DASHBOARD_PORT": str(port), "BILLING_DASHBOARD_TOKEN": "t0ken"}
    code = "from streams.cli.dashboard import dashboard; dashboard()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/" in line.decode()
        async with aiohttp.ClientSession() as http:
            assert (await _get(http, f"http://127.0.0.1:{port}/api/rows"))[0] == 401
            bearer = {"Authorization": "Bearer t0ken"}
            status, body = await _get(http, f"http://127.0.0.1:{port}/api/rows", headers=bearer)
            assert status == 200 and len(body["rows"]) == len(ROWS)
    finally:
        proc.terminate()
        await proc.wait()
    env["BILLING_DASHBOARD_PORT"] = "eighty"
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(bad.communicate(), 20)
    assert bad.returncode == 2 and b"bad configuration BILLING_DASHBOARD_PORT" in err
