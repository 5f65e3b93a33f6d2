"""`billing api` reads end to end: keys and scopes, windows, pages and the change feed, over a real
server, broker, Postgres and worker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api_support import bearer, billing_cli, create_key, good_charges, pipeline
from tests.support import wait_until

pytestmark = pytest.mark.integration


async def test_portal_token_never_sees_another_account(broker, database, tmp_path):
    async with pipeline(broker, database, tmp_path, api_key_cache="0s") as p:
        ingest = await create_key(p.env, "ingest")
        mine, theirs = f"mine-{uuid.uuid4().hex[:6]}", f"theirs-{uuid.uuid4().hex[:6]}"
        portal = await create_key(p.env, f"read:account={mine}")
        admin = await create_key(p.env, "read:all")
        now = datetime.now(UTC)
        charges = good_charges([mine, theirs], 4, now)
        async with httpx.AsyncClient(base_url=p.api.url, timeout=60) as client:
            sent = await client.post("/v1/charges", json=charges, headers=bearer(ingest))
            assert sent.status_code == 202, sent.text
            await p.wait_counted(charges)
            today = now.date().isoformat()
            week = {"from": (now.date() - timedelta(days=7)).isoformat(), "to": today}

            async def get(path: str, key: str, **params: Any) -> httpx.Response:
                return await client.get(path, params={**week, **params}, headers=bearer(key))

            everyone = await get("/v1/usage", admin, group_by="account")
            assert {r["group"]["account"] for r in everyone.json()["data"]} >= {mine, theirs}

            by_account = await get("/v1/usage", portal, group_by="account,provider")
            assert by_account.status_code == 200
            assert {r["group"]["account"] for r in by_account.json()["data"]} == {mine}
            assert sum(r["usage"]["charge_count"] for r in by_account.json()["data"]) == 4
            for refused in (
                await get("/v1/usage", portal, account=theirs),
                await get("/v1/usage", portal, account=[mine, theirs]),
                await get(f"/v1/accounts/{theirs}/usage", portal),
                await client.get("/v1/usage/changes", params={"account": theirs}, headers=bearer(portal)),
            ):
                assert refused.status_code == 403 and theirs not in refused.text
                assert refused.json()["error"] == "forbidden_account"
            own = await get(f"/v1/accounts/{mine}/usage", portal, window="month")
            assert own.status_code == 200 and own.json()["data"][0]["usage"]["charge_count"] == 4
            changes = await client.get("/v1/usage/changes", headers=bearer(portal))
            assert {r["group"]["account"] for r in changes.json()["data"]} == {mine}

            assert (await client.get("/v1/usage", headers=bearer(ingest))).status_code == 403
            assert (
                await client.post("/v1/charges", json=charges[:1], headers=bearer(portal))
            ).status_code == 403
            assert (await client.get("/v1/usage")).json()["error"] == "missing_key"
            assert (await client.get("/v1/usage", headers=bearer("bk_0_nope"))).json()[
                "error"
            ] == "unknown_key"
            revoked = await _revoke(p.env, portal)
            assert revoked.exit_code == 0, revoked.output
            gone = await client.get("/v1/usage", headers=bearer(portal))
            assert gone.status_code == 401 and gone.json()["error"] == "revoked_key"
        await _keys_are_listed_never_shown(p.env, ingest, portal, admin, mine)


async def _keys_are_listed_never_shown(
    env: dict[str, str], ingest: str, portal: str, admin: str, mine: str
) -> None:
    from streams.cli.api import keys

    listed = await billing_cli(env, keys, "list")
    assert listed.exit_code == 0, listed.output
    assert ingest.split("_")[1] in listed.stdout and admin.split("_")[1] in listed.stdout
    assert portal.split("_")[1] not in listed.stdout  # revoked: only with --all
    everything = (await billing_cli(env, keys, "list", "--all")).stdout
    assert f"read:account={mine}" in everything and "revoked" in everything
    assert not any(k in everything for k in (ingest, portal, admin))
    bad = await billing_cli(env, keys, "create", "--scope", "read:everything")
    assert bad.exit_code == 2 and "unknown scope" in bad.output


async def _revoke(env: dict[str, str], key: str) -> Any:
    from streams.cli.api import keys

    return await billing_cli(env, keys, "revoke", key.split("_")[1])


async def test_windows_final_days_pages_change_feed_and_restricted_ingest(broker, database, tmp_path):
    async with pipeline(broker, database, tmp_path, grace="1s", idle_timeout="2s") as p:
        a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
        only_a = await create_key(p.env, "ingest", a)
        admin = await create_key(p.env, "read:all")
        now = datetime.now(UTC)
        old = now - timedelta(days=3)
        charges = [*good_charges([a], 2, old), *good_charges([a, b], 2, now)]
        async with httpx.AsyncClient(base_url=p.api.url, timeout=60) as client:
            sent = await client.post("/v1/charges", json=charges, headers=bearer(only_a))
            assert sent.status_code == 202, sent.text
            refused = sent.json()["errors"]
            assert [(e["index"], e["reason"]) for e in refused] == [
                (4, "forbidden_account"),
                (5, "forbidden_account"),
            ]
            anyone = await create_key(p.env, "ingest")
            again = await client.post("/v1/charges", json=charges[4:], headers=bearer(anyone))
            assert again.status_code == 202 and again.json()["accepted"] == 2
            await p.wait_counted(charges)
            days = {"from": old.date().isoformat(), "to": now.date().isoformat()}
            read = bearer(admin)

            async def old_day_final() -> bool:
                page = await client.get("/v1/usage", params={**days, "account": a}, headers=read)
                return page.json()["data"][0]["final"] is True

            await wait_until(old_day_final, 120, "the old day to close", on_timeout=p.logs)
            rows, url = [], "/v1/usage"
            params: dict[str, Any] | None = {**days, "group_by": "account", "account": [a, b], "limit": 1}
            while url:
                page = (await client.get(url, params=params, headers=read)).json()
                rows += page["data"]
                url, params = page["next"], None
            seen = {(r["start"], r["group"]["account"], r["usage"]["charge_count"], r["final"]) for r in rows}
            today = now.date().isoformat()
            assert seen == {(old.date().isoformat(), a, 2, True), (today, a, 2, False), (today, b, 2, False)}
            for window in ("week", "month"):
                page = await client.get(
                    "/v1/usage", params={**days, "window": window, "account": [a, b]}, headers=read
                )
                assert sum(r["usage"]["charge_count"] for r in page.json()["data"]) == 6

            feed, since, more = [], None, True
            while more:
                params = {"limit": 2, **({"since": since} if since else {})}
                page = (await client.get("/v1/usage/changes", params=params, headers=read)).json()
                feed += page["data"]
                since, more = page["cursor"], page["has_more"]
            ours = {(r["group"]["account"], r["date"]): r for r in feed if r["group"]["account"] in (a, b)}
            assert set(ours) == {(a, old.date().isoformat()), (a, today), (b, today)}
            closed = ours[(a, old.date().isoformat())]
            assert closed["final"] and closed["finalized_at"] and closed["revision"] == 0  # no late charge
            stamps = [(r["updated_at"], r["id"]) for r in feed]
            assert stamps == sorted(stamps)
