"""`billing api` ingest end to end: a real server, the real broker, real Postgres and a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.api.ingest import IngestResult
from streams.embedded.broker import EmbeddedBroker
from tests.api_support import bearer, create_key, good_charges, pipeline, post_until
from tests.integration.tcp_proxy import TcpProxy
from tests.support import charge_dict, free_port, wait_until

pytestmark = pytest.mark.integration


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
    limits = {"api_max_body_bytes": "20000", "api_max_charges": "100", "log_format": "json"}
    async with pipeline(broker, database, tmp_path, **limits) as p:
        key = await create_key(p.env, "ingest")
        now = datetime.now(UTC)
        accounts = [f"acct-{uuid.uuid4().hex[:6]}" for _ in range(3)]
        good = good_charges(accounts, 8, now)
        bad = bad_elements(accounts[0], now)
        body = interleave(good, bad)
        async with httpx.AsyncClient(base_url=p.api.url, headers=bearer(key), timeout=60) as client:
            first = await client.post("/v1/charges", json=body)
            assert first.status_code == 202, first.text
            answer = IngestResult.model_validate(first.json()).model_dump()  # the documented shape
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

            too_big = await client.post("/v1/charges", json=good * 4)
            assert too_big.status_code == 413 and too_big.json()["error"] == "body_too_large"
            too_many = await client.post("/v1/charges", json=[{}] * 101)
            assert too_many.status_code == 413 and too_many.json()["error"] == "too_many_charges"
            metrics = (await client.get("/metrics")).text
        await p.wait_counted(good + tail)
        accepted = 2 * len(good) + len(tail)
        assert f"billing_api_charges_accepted_total {float(accepted)}" in metrics
        assert 'billing_api_charges_refused_total{reason="negative_count"} 3.0' in metrics
        assert 'billing_api_requests_total{method="POST",route="/v1/charges",status="413"} 2.0' in metrics
        assert "billing_api_request_duration_seconds_bucket" in metrics
        p.api.stop()
        log = p.api.log_path.read_text()
        access = [json.loads(line) for line in log.splitlines() if '"streams.api.access"' in line]
        assert access and {"route", "status", "key_id"} <= set(access[0]), log[-2000:]
        assert key.split("_")[1] in log and key not in log  # the key's id is logged, the key never


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


async def test_broker_lost_mid_request_503_then_the_retry_counts_each_charge_once(
    run_dir, database, tmp_path
):
    """Kafka behind a proxy that holds the produce request, then drops every connection."""
    proxy = TcpProxy("127.0.0.1:1")  # its target is set once the broker's port is known
    await proxy.start()
    private = EmbeddedBroker(
        tmp_path / "broker", "127.0.0.1", free_port(), advertised=f"127.0.0.1:{proxy.port}"
    )
    proxy.target = ("127.0.0.1", private.port)
    await private.start()
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        async with pipeline(bootstrap, database, tmp_path, api_delivery_timeout="3s") as p:
            key = await create_key(p.env, "ingest")
            now = datetime.now(UTC)
            accounts = [f"acct-{uuid.uuid4().hex[:6]}" for _ in range(4)]
            warm, batch = good_charges(accounts, 1, now), good_charges(accounts, 25, now)
            async with httpx.AsyncClient(base_url=p.api.url, headers=bearer(key), timeout=120) as client:
                assert (await client.post("/v1/charges", json=warm)).status_code == 202
                proxy.freeze()
                request = asyncio.create_task(client.post("/v1/charges", json=batch))

                async def in_flight() -> bool:
                    return proxy.held > 0

                await wait_until(in_flight, 60, "the produce request at the proxy")
                await proxy.cut()
                lost = await request
                assert lost.status_code == 503, lost.text
                assert int(lost.headers["Retry-After"]) >= 1
                assert lost.json()["event_ids"] == [c["event_id"] for c in batch]
                await proxy.resume()
                proxy.thaw()
                retried = await post_until(client, "/v1/charges", 120, json=batch)
                assert retried.status_code == 202, retried.text
                tail = good_charges(accounts, 1, now)
                assert (await post_until(client, "/v1/charges", 60, json=tail)).status_code == 202
            await p.wait_counted(warm + batch + tail, timeout=180)
    finally:
        await proxy.stop()
        await private.stop()


async def test_a_client_generated_from_the_served_schema_ingests_and_queries(broker, database, tmp_path):
    async with pipeline(broker, database, tmp_path) as p:
        ingest, reader = await create_key(p.env, "ingest"), await create_key(p.env, "read:all")
        schema = tmp_path / "openapi.json"
        async with httpx.AsyncClient(base_url=p.api.url, timeout=30) as client:
            schema.write_bytes((await client.get("/openapi.json")).content)
        out = tmp_path / "generated"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        command = [
            "generate",
            "--path",
            str(schema),
            "--meta",
            "none",
            "--output-path",
            str(out / "billing_client"),
        ]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "openapi_python_client", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        sys.path.insert(0, str(out))
        try:
            await _use_generated_client(p, ingest, reader)
        finally:
            sys.path.remove(str(out))
            for name in [m for m in sys.modules if m == "billing_client" or m.startswith("billing_client.")]:
                del sys.modules[name]


async def _use_generated_client(p: Any, ingest_key: str, reader_key: str) -> None:
    from billing_client import AuthenticatedClient  # type: ignore[import-not-found]
    from billing_client.api.default import get_usage, post_charges  # type: ignore[import-not-found]
    from billing_client.models import ChargeInput, IngestResult, UsagePage  # type: ignore[import-not-found]

    now = datetime.now(UTC)
    charges = good_charges([f"gen-{uuid.uuid4().hex[:6]}"], 3, now)
    body = [ChargeInput.from_dict(c) for c in charges]
    sender = AuthenticatedClient(base_url=p.api.url, token=ingest_key, timeout=httpx.Timeout(60))
    async with sender as client:
        sent = await post_charges.asyncio(client=client, body=body)
    assert isinstance(sent, IngestResult) and sent.accepted == 3, sent
    await p.wait_counted(charges)
    reader = AuthenticatedClient(base_url=p.api.url, token=reader_key, timeout=httpx.Timeout(60))
    async with reader as client:
        page = await get_usage.asyncio(
            client=client,
            from_=now.date() - timedelta(days=1),
            to=now.date(),
            group_by="account",
            account=[charges[0]["account_id"]],
        )
    assert isinstance(page, UsagePage), page
    assert sum(w.usage.charge_count for w in page.data) == 3
    assert sum(w.usage.total_tokens for w in page.data) == sum(
        c["prompt_tokens"] + c["completion_tokens"] for c in charges
    )
