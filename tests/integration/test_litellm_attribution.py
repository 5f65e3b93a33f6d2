"""Which LiteLLM calls the callback bills, and to whom: the default metadata keys, the keys the
LiteLLM proxy fills in, and cache hits (billed only when `bill_cache_hits` says so).

Real LiteLLM calls (`mock_response`, offline) and a real broker; what reached the topic is read
back. A cache hit is the same call's kwargs with LiteLLM's `cache_hit` flag set, handed to the
callback as LiteLLM hands it: LiteLLM's own cache-hit path imports its proxy's extras (orjson
and more), which its base install and ours lack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm loads: no network
litellm = pytest.importorskip(
    "litellm", reason="litellm is not installed: `pip install -e '.[litellm]'` (optional extra)"
)

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

from streams.config.settings import Settings  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402
from streams.producer.litellm_callback import BillingCallback  # noqa: E402
from tests.integration.test_litellm import MESSAGES, read_charges  # noqa: E402
from tests.support import unique, wait_until  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]


class Recorder(CustomLogger):
    """Keeps what LiteLLM hands its callbacks for each successful call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, Any], Any]] = []

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.calls.append((kwargs, response_obj))


async def topic_settings(broker: str, **fields: str) -> Settings:
    name = unique("llm")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=broker,
        charges_topic=f"{name}-charges",
        dlq_topic=f"{name}-dlq",
        **fields,
    )
    await ensure_topics(settings)
    return settings


@contextlib.contextmanager
def registered(*callbacks: CustomLogger) -> Iterator[None]:
    """LiteLLM's callbacks for the block. LiteLLM copies `litellm.callbacks` into lists of its
    own and keeps one logger per class and settings there, so they are taken out again after."""
    saved, litellm.callbacks = litellm.callbacks, list(callbacks)
    try:
        yield
    finally:
        litellm.callbacks = saved
        for kept in (litellm.success_callback, litellm._async_success_callback):
            kept[:] = [c for c in kept if all(c is not mine for mine in callbacks)]


async def call(**kwargs: Any) -> Any:
    return await asyncio.to_thread(
        litellm.completion, model="gpt-4o-mini", messages=MESSAGES, mock_response="Hi", **kwargs
    )


async def settle(callback: BillingCallback, outcomes: int) -> None:
    async def reported() -> bool:
        return callback.sent + len(callback.failed) + len(callback.unattributed) >= outcomes

    await wait_until(reported, 30, f"the callback to report {outcomes} calls")
    await asyncio.to_thread(callback.close)


async def test_default_keys_and_the_proxys_keys_attribute_calls(broker: str) -> None:
    """Without settings, `metadata={"account_id", "user_id"}` names the payer; with the proxy's
    keys configured (as BILLING_LITELLM_ACCOUNT_KEY/USER_KEY would), its metadata does."""
    defaults = await topic_settings(broker)
    callback = BillingCallback(defaults)
    with registered(callback):
        plain = await call(metadata={"account_id": "acme", "user_id": "alice"})
        await call(metadata={"account_id": "acme", "end_user": "alice"})  # no user_id: not billed
        await settle(callback, 2)
    assert (callback.sent, len(callback.unattributed), callback.failed) == (1, 1, [])
    [(key, charge)] = await read_charges(defaults)
    assert (key, charge["account_id"], charge["user_id"], charge["reference"]) == (
        b"acme",
        "acme",
        "alice",
        plain.id,
    )

    proxy = await topic_settings(
        broker, litellm_account_key="user_api_key_team_id", litellm_user_key="user_api_key_user_id"
    )
    callback = BillingCallback(proxy)
    team = {"user_api_key_team_id": "team-7", "user_api_key_user_id": "u-42"}
    with registered(callback):
        from_proxy = await call(litellm_metadata=team)  # where the proxy puts them
        await settle(callback, 1)
    [(key, charge)] = await read_charges(proxy)
    assert (key, charge["account_id"], charge["user_id"], charge["reference"]) == (
        b"team-7",
        "team-7",
        "u-42",
        from_proxy.id,
    )


@pytest.mark.parametrize("bill_cache_hits", [False, True])
async def test_cache_hits_are_billed_only_when_asked(broker: str, bill_cache_hits: bool) -> None:
    settings = await topic_settings(broker)
    callback = BillingCallback(settings, bill_cache_hits=bill_cache_hits)
    recorder = Recorder()

    async def recorded() -> bool:
        return bool(recorder.calls)

    with registered(callback, recorder):
        fresh = await call(metadata={"account_id": "acme", "user_id": "alice"})
        await wait_until(recorded, 30, "LiteLLM's success callback")
        [(kwargs, response)] = recorder.calls
        hit = {**kwargs, "cache_hit": True, "litellm_call_id": unique("hit")}  # a later call, from cache
        await asyncio.to_thread(callback.log_success_event, hit, response, None, None)
        await settle(callback, 2 if bill_cache_hits else 1)
    assert callback.failed == []
    charges = [c for _, c in await read_charges(settings)]
    expected = [kwargs["litellm_call_id"], *([hit["litellm_call_id"]] if bill_cache_hits else [])]
    assert sorted(c["event_id"] for c in charges) == sorted(expected)
    assert all(c["reference"] == fresh.id and c["account_id"] == "acme" for c in charges)
