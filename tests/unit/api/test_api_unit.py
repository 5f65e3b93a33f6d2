"""The API's pure parts: scopes, keys, bodies, validation by the worker's rules, SQL, cursors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import generate_latest

from streams.api.auth import Caller, readable_accounts
from streams.api.bodies import CLOUDEVENT_BATCH, JSON, NDJSON, Refusal, elements_of, from_cloudevent
from streams.api.keys import PREFIX, Scope, hash_key, key_id_of, new_key, parse_scope
from streams.api.query import _decode_cursor, _encode_cursor, _window_end
from streams.api.usage_sql import UsageQuery, build_changes_sql, build_usage_sql
from streams.api.validate import check_elements
from streams.charge.decode import Limits, decode_record
from streams.errors import ApiError

NOW = datetime(2026, 6, 10, 12, tzinfo=UTC)
LIMITS = Limits(NOW, timedelta(minutes=5), ZoneInfo("UTC"), timedelta(days=35))


def charge(account: str = "acme", **extra: object) -> dict[str, object]:
    base = {
        "event_id": "e1",
        "occurred_at": "2026-06-10T11:00:00Z",
        "account_id": account,
        "user_id": "u",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 3,
        "completion_tokens": 4,
    }
    return {**base, **extra}


def test_scopes_parse_and_refuse() -> None:
    assert parse_scope("ingest") == Scope("ingest")
    assert parse_scope("ingest", ["a", "b", "a"]) == Scope("ingest", ("a", "b"))
    assert parse_scope("read:all") == Scope("read:all")
    portal = parse_scope("read:account=acme")
    assert portal.portal_account == "acme" and portal.reads and str(portal) == "read:account=acme"
    for bad, accounts in (("admin", ()), ("read:all", ("a",)), ("read:account=", ()), ("ingest", (" a",))):
        with pytest.raises(ValueError):
            parse_scope(bad, accounts)
    assert Scope("ingest", ("a",)).may_ingest_for("a") and not Scope("ingest", ("a",)).may_ingest_for("b")
    assert not Scope("read:all").may_ingest_for("a")


def test_keys_are_random_hashed_and_name_their_id() -> None:
    (id1, key1), (id2, key2) = new_key(), new_key()
    assert id1 != id2
    assert key1 != key2 and key1.startswith(PREFIX) and len(key1) > 50
    assert key_id_of(key1) == id1 and key_id_of("Bearer x") is None
    assert hash_key(key1) != hash_key(key2) and len(hash_key(key1)) == 32
    assert key1 not in hash_key(key1).hex()


def test_a_portal_token_reads_its_own_account_whatever_is_asked() -> None:
    portal = Caller("k", Scope("read:account", ("mine",)))
    assert readable_accounts(portal, []) == ["mine"]
    assert readable_accounts(portal, ["mine"]) == ["mine"]
    for asked in (["theirs"], ["mine", "theirs"]):
        with pytest.raises(ApiError) as refused:
            readable_accounts(portal, asked)
        assert refused.value.status == 403 and "theirs" not in refused.value.message
    assert readable_accounts(Caller("k", Scope("read:all")), ["x"]) == ["x"]


def test_bodies_json_ndjson_cloudevents() -> None:
    assert elements_of(json.dumps(charge()).encode(), JSON) == [charge()]
    assert len(elements_of(json.dumps([charge(), charge()]).encode(), JSON)) == 2
    lines = elements_of(b'{"a": 1}\n\nnot json\n[1]\n', NDJSON)
    assert lines == [{"a": 1}, Refusal("invalid_json", "this line is not JSON"), [1]]
    for body, kind, status in (
        (b"", JSON, 400),
        (b"[]", JSON, 400),
        (b"{", JSON, 400),
        (b"{}", "text/csv", 415),
    ):
        with pytest.raises(ApiError) as refused:
            elements_of(body, kind)
        assert refused.value.status == status
    event = {"specversion": "1.0", "id": "ce-1", "source": "/s", "type": "t", "time": "2026-06-10T11:00:00Z"}
    data = {k: v for k, v in charge().items() if k not in ("event_id", "occurred_at")}
    unwrapped = from_cloudevent({**event, "data": data})
    assert unwrapped["event_id"] == "ce-1" and unwrapped["occurred_at"] == event["time"]
    assert from_cloudevent({**event, "data": charge()})["event_id"] == "e1"  # data's own id wins
    for broken in (
        {**event, "specversion": "0.3", "data": data},
        {**event, "data": "x"},
        [1],
        {"data": data},
    ):
        assert isinstance(from_cloudevent(broken), Refusal)
    batch = elements_of(json.dumps([{**event, "data": data}, {"id": 1}]).encode(), CLOUDEVENT_BATCH)
    assert isinstance(batch[0], dict) and isinstance(batch[1], Refusal)


BAD = [
    charge(prompt_tokens=-1),
    charge(prompt_tokens="3"),
    charge(occurred_at="2026-06-10T11:00:00"),
    charge(occurred_at="2026-06-11T11:00:00Z"),
    charge(occurred_at="2026-01-01T00:00:00Z"),
    charge(total_tokens=8),
    charge(cached_tokens=9),
    charge(provider="Open AI"),
    charge(surprise=1),
    charge(note="x" * 70_000),
    {k: v for k, v in charge().items() if k != "user_id"},
]


@pytest.mark.parametrize("element", BAD, ids=range(len(BAD)))
def test_refusals_are_the_workers_dlq_reasons(element: dict[str, object]) -> None:
    """The API and the worker run the same rules: a record of this one element gets the same reason."""
    worker = decode_record(json.dumps([element]).encode(), b"acme", LIMITS).rejections
    api = check_elements([charge(account="other"), element], LIMITS)
    assert [c[0] for c in api.charges] == [0]
    assert list(api.refused) == [1] and api.refused[1].reason == worker[0].reason


def test_validation_keeps_request_indexes_across_accounts_and_fills_event_ids() -> None:
    elements = [charge("a"), 5, charge("b", prompt_tokens=-1), {"account_id": 7}, charge("b", event_id=None)]
    checked = check_elements(elements, LIMITS)
    assert [i for i, _ in checked.charges] == [0, 4]
    assert {i: r.reason for i, r in checked.refused.items()} == {
        1: "not_an_object",
        2: "negative_count",
        3: "wrong_type",
    }
    filled = checked.charges[1][1].event_id
    assert filled and filled != "e1"


def test_usage_sql_binds_every_value_and_whitelists_names() -> None:
    hostile = "x'; DROP TABLE daily_billing_records; --"
    q = UsageQuery(
        date(2026, 1, 1), date(2026, 3, 31), "month", ("account", "provider"), {"account": [hostile]}, 50, 100
    )
    sql, params = build_usage_sql(q)
    assert hostile not in sql and [hostile] in params and 51 in params and 100 in params
    assert "date_trunc('month'" in sql and '"account_id"' in sql
    for group_by in (("date",), ("account", "account"), ("account_id",)):
        with pytest.raises(ValueError):
            build_usage_sql(UsageQuery(date(2026, 1, 1), date(2026, 1, 2), group_by=group_by))
    sql, params = build_changes_sql((NOW, 7), NOW, {"account": [hostile]}, 10)
    assert hostile not in sql and "(updated_at, id) >" in sql and params[-1] == 11


def test_windows_and_cursors() -> None:
    assert _window_end(date(2026, 12, 1), "month") == date(2027, 1, 1)
    assert _window_end(date(2026, 2, 1), "month") == date(2026, 3, 1)
    assert _window_end(date(2026, 6, 8), "week") == date(2026, 6, 15)
    stamp = datetime(2026, 6, 10, 12, 0, 0, 123456, tzinfo=UTC)
    assert _decode_cursor(_encode_cursor(stamp, 42)) == (stamp, 42)
    with pytest.raises(ApiError):
        _decode_cursor("not-a-cursor")


def test_the_served_schema_documents_every_route() -> None:
    from streams.api.app import create_app
    from streams.config.settings import Settings

    schema = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    assert {"/v1/charges", "/v1/usage", "/v1/usage/changes", "/v1/accounts/{account_id}/usage"} <= set(
        schema["paths"]
    )
    charge_input = schema["components"]["schemas"]["ChargeInput"]
    assert "event_id" not in charge_input["required"] and "account_id" in charge_input["required"]
    assert "CloudEvent" in schema["components"]["schemas"]
    body = schema["paths"]["/v1/charges"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(body)
    assert "HTTPValidationError" not in str(schema)  # bad parameters are a 400 ErrorBody here
    for operations in schema["paths"].values():
        assert all("400" in op["responses"] and "401" in op["responses"] for op in operations.values())


async def test_the_guard_refuses_beyond_the_concurrency_limit_but_never_health() -> None:
    """One request holds the only slot: the next gets 503 + Retry-After at once, /health passes."""
    import asyncio

    from streams.api.metrics import ApiMetrics
    from streams.api.middleware import Guard

    release, entered = asyncio.Event(), asyncio.Event()

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    metrics = ApiMetrics()
    guard = Guard(app, metrics, limit=1, retry_after_s=7)

    async def call(path: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await guard({"type": "http", "method": "GET", "path": path}, None, send)  # type: ignore[arg-type]
        return sent

    slow = asyncio.create_task(call("/slow"))
    await entered.wait()
    refused = await call("/v1/usage")
    assert refused[0]["status"] == 503 and (b"retry-after", b"7") in refused[0]["headers"]
    assert (await call("/health"))[0]["status"] == 200
    release.set()
    assert (await slow)[0]["status"] == 200
    assert (await call("/v1/usage"))[0]["status"] == 200
    text = generate_latest(metrics.registry).decode()
    assert 'billing_api_requests_total{method="GET",route="unmatched",status="503"} 1.0' in text
