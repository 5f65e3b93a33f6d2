"""`billing api` end to end: a real server, the real broker, real Postgres and a real worker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api_support import bearer, create_key, pipeline
from tests.support import charge_dict

pytestmark = pytest.mark.integration


def good_charges(accounts: list[str], per_account: int, when: datetime) -> list[dict[str, Any]]:
    return [
        charge_dict(a, f"user-{i % 2}", "openai", "completion", when - timedelta(minutes=i), 10 + i, 5 + i)
        for a in accounts
        for i in range(per_account)
    ]


def bad_elements(account: str, when: datetime) -> dict[int, tuple[Any, str]]:
    """Bad elements by the position they take in a batch, with the reason the worker gives."""
    base = charge_dict(account, "u", "openai", "completion", when, 1, 1)
    missing = {k: v for k, v in base.items() if k != "user_id"}
    return {
        1: ({**base, "prompt_tokens": -1}, "negative_count"),
        4: (missing, "missing_field"),
        6: ({**base, "occurred_at": "2026-01-01T00:00:00"}, "naive_timestamp"),
        7: ({**base, "occurred_at": (when + timedelta(days=1)).isoformat()}, "future_timestamp"),
        9: (["not", "a", "charge"], "not_an_object"),
        10: ({**base, "total_tokens": 999}, "total_mismatch"),
        12: ({**base, "prompt_tokens": 1.5}, "wrong_type"),
    }


def interleave(good: list[dict[str, Any]], bad: dict[int, tuple[Any, str]]) -> list[Any]:
    body, rest = [], iter(good)
    for position in range(len(good) + len(bad)):
        body.append(bad[position][0] if position in bad else next(rest))
    return body


async def test_batch_good_counted_bad_refused_and_a_resent_request_counts_once(broker, database, tmp_path):
    async with pipeline(broker, database, tmp_path) as p:
        key = await create_key(p.env, "ingest")
        now = datetime.now(UTC)
        accounts = [f"acct-{uuid.uuid4().hex[:6]}" for _ in range(3)]
        good = good_charges(accounts, 8, now)
        bad = bad_elements(accounts[0], now)
        body = interleave(good, bad)
        async with httpx.AsyncClient(base_url=p.api.url, headers=bearer(key), timeout=60) as client:
            first = await client.post("/v1/charges", json=body)
            assert first.status_code == 202, first.text
            answer = first.json()
            assert answer["accepted"] == len(good) and answer["refused"] == len(bad)
            assert {e["index"]: e["reason"] for e in answer["errors"]} == {i: r for i, (_, r) in bad.items()}
            assert [c["event_id"] for c in answer["charges"]] == [g["event_id"] for g in good]
            assert all(e["detail"] for e in answer["errors"])

            again = await client.post("/v1/charges", json=body)  # a client retrying the request
            assert again.status_code == 202 and again.json()["accepted"] == len(good)

            # NDJSON, after the retry on the same partitions: once these count, the retry was seen.
            tail = good_charges(accounts, 1, now)
            ndjson = "\n".join(json.dumps(c) for c in tail) + "\n"
            sent = await client.post(
                "/v1/charges", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
            )
            assert sent.status_code == 202 and sent.json()["accepted"] == len(tail), sent.text

            every_bad = await client.post("/v1/charges", json=[b for b, _ in bad.values()])
            assert every_bad.status_code == 422 and every_bad.json()["accepted"] == 0
        await p.wait_counted(good + tail)


async def test_cloudevents_single_and_batch(broker, database, tmp_path):
    async with pipeline(broker, database, tmp_path) as p:
        key = await create_key(p.env, "ingest")
        now = datetime.now(UTC)
        account = f"acct-{uuid.uuid4().hex[:6]}"

        def event(data: dict[str, Any]) -> dict[str, Any]:
            ids = {"id": str(uuid.uuid4()), "source": "/tests", "type": "llm.usage", "time": now.isoformat()}
            return {"specversion": "1.0", **ids, "data": data}

        def bare(i: int) -> dict[str, Any]:
            c = charge_dict(account, "u", "anthropic", "completion", now, 100 + i, 7)
            del c["event_id"], c["occurred_at"]
            return c

        single = event(bare(0))
        batch = [event(bare(i)) for i in range(1, 5)]
        batch.insert(2, {**event(bare(9)), "specversion": "0.3"})
        async with httpx.AsyncClient(base_url=p.api.url, headers=bearer(key), timeout=60) as client:
            one = await client.post(
                "/v1/charges",
                content=json.dumps(single),
                headers={"Content-Type": "application/cloudevents+json"},
            )
            assert one.status_code == 202, one.text
            assert one.json()["charges"] == [{"index": 0, "event_id": single["id"]}]
            kind = {"Content-Type": "application/cloudevents-batch+json"}
            many = await client.post("/v1/charges", content=json.dumps(batch), headers=kind)
            assert many.status_code == 202, many.text
            assert [(e["index"], e["reason"]) for e in many.json()["errors"]] == [(2, "bad_cloudevent")]
            again = await client.post("/v1/charges", content=json.dumps(batch), headers=kind)
            assert again.status_code == 202  # the same CloudEvent ids: counted once
        sent = [single, *batch[:2], *batch[3:]]
        expected = [{**e["data"], "event_id": e["id"], "occurred_at": e["time"]} for e in sent]
        await p.wait_counted(expected)


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


async def _revoke(env: dict[str, str], key: str) -> Any:
    from tests.api_support import billing_cli

    return await billing_cli(env, "keys", "revoke", key.split("_")[1])
