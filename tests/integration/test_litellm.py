"""The LiteLLM callback, offline: mocked LLM calls (`mock_response`, local cost map) become charges
that a real broker holds, with account and user from the call's metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm loads: no network
litellm = pytest.importorskip(
    "litellm", reason="litellm is not installed: `pip install -e '.[litellm]'` (optional extra)"
)

from litellm import ModelResponse, Usage  # noqa: E402
from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper  # noqa: E402

from streams.config.settings import Settings  # noqa: E402
from streams.kafka.topic_reader import read_topic  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402
from streams.producer.litellm_callback import BillingCallback  # noqa: E402
from streams.producer.one_charge import acreate_charge  # noqa: E402
from tests.support import unique, wait_until  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
    ),  # litellm types
]
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def read_charges(settings: Settings) -> list[tuple[bytes, dict[str, Any]]]:
    """(record key, charge) for every charge on the topic; records may be batches (JSON arrays)."""
    out = []
    async for records in read_topic(settings, settings.charges_topic, settle=0.5):
        for record in records:
            body = json.loads(record.value)
            out.extend((record.key, c) for c in (body if isinstance(body, list) else [body]))
    return out


def anthropic_like_response() -> ModelResponse:
    """What LiteLLM returns for an Anthropic call with a cache read, a cache write and thinking,
    normalised to the OpenAI shape: cache reads and writes inside prompt_tokens and apart in
    prompt_tokens_details."""
    usage = Usage(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=1000, cache_write_tokens=150),
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=200),
    )
    message = {"role": "assistant", "content": "Hello!"}
    return ModelResponse(model="claude-sonnet-4-20250514", choices=[{"message": message}], usage=usage)


async def test_litellm_calls_become_charges(broker: str) -> None:
    name = unique("llm")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=broker,
        charges_topic=f"{name}-charges",
        dlq_topic=f"{name}-charges.dlq",
        partitions=2,
    )
    await ensure_topics(settings)
    callback = BillingCallback(settings, account_key="tenant", user_key="end_user")
    saved, litellm.callbacks = litellm.callbacks, [callback]
    try:
        # A sync call from an app thread (LiteLLM logs it from its own worker thread) ...
        sync = await asyncio.to_thread(
            litellm.completion,
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="Hello!",
            metadata={"tenant": "acme", "end_user": "alice"},
        )
        # ... async calls (logged on this loop), one of them without an account: not billable.
        cached = await litellm.acompletion(
            model="anthropic/claude-sonnet-4-20250514",
            messages=MESSAGES,
            mock_response=anthropic_like_response(),
            metadata={"tenant": "acme", "end_user": "bob", "session_key": "s-1"},
        )
        gemini = await litellm.acompletion(
            model="gemini/gemini-2.5-flash",
            messages=MESSAGES,
            mock_response="Hi",
            metadata={"tenant": "globex", "end_user": "carol"},
        )
        await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="Hi", metadata={"end_user": "nobody"}
        )
        stream = await litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="Hello there, streamed",
            stream=True,
            metadata={"tenant": "acme", "end_user": "erin"},
        )
        streamed_ids = {chunk.id async for chunk in stream}  # billed once, when the stream ends

        async def settled() -> bool:
            return callback.sent + len(callback.failed) + len(callback.unattributed) >= 5

        await wait_until(settled, 30, "the callback to report all five calls")
    finally:
        litellm.callbacks = saved
        await asyncio.to_thread(callback.close)
    assert callback.failed == []
    assert (callback.sent, len(callback.unattributed)) == (4, 1)

    charges = await read_charges(settings)
    found = {c["reference"]: (key, c) for key, c in charges}
    [streamed_id] = streamed_ids
    assert len(charges) == 4  # exactly one charge per billable call
    assert set(found) == {sync.id, cached.id, gemini.id, streamed_id}

    key, charge = found[sync.id]
    assert key == b"acme"
    assert {k: charge[k] for k in ("account_id", "user_id", "provider", "charge_type", "model")} == {
        "account_id": "acme",
        "user_id": "alice",
        "provider": "openai",
        "charge_type": "completion",
        "model": "gpt-4o-mini",
    }
    usage = sync.usage  # LiteLLM's mock usage: whatever it is, the charge carries it exactly
    assert (charge["prompt_tokens"], charge["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert charge["total_tokens"] == usage.prompt_tokens + usage.completion_tokens
    # LiteLLM's own cost estimate travels along, in whole nano-units of its float's decimal text.
    cost = litellm.completion_cost(completion_response=sync)
    assert cost > 0
    expected = int((Decimal(str(cost)) * 10**9).to_integral_value(rounding=ROUND_HALF_EVEN))
    assert charge["reported_cost_nanos"] == expected

    _, charge = found[cached.id]
    assert (charge["provider"], charge["user_id"], charge["session_key"]) == ("anthropic", "bob", "s-1")
    assert (charge["prompt_tokens"], charge["cached_tokens"], charge["cache_write_tokens"]) == (
        1200,
        1000,
        150,
    )
    assert (charge["completion_tokens"], charge["reasoning_tokens"], charge["total_tokens"]) == (
        300,
        200,
        1500,
    )

    key, charge = found[gemini.id]
    assert (key, charge["provider"], charge["account_id"]) == (b"globex", "googleai", "globex")
    _, charge = found[streamed_id]
    assert (charge["user_id"], charge["completion_tokens"] > 0) == ("erin", True)
    assert len({c["event_id"] for _, c in found.values()}) == 4


async def test_create_charge_with_usage_reaches_the_topic(broker: str) -> None:
    name = unique("usage")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap=broker, charges_topic=f"{name}-charges", dlq_topic=f"{name}-dlq"
    )
    await ensure_topics(settings)
    gemini_rest = {
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 300, "thoughtsTokenCount": 1200},
        "modelVersion": "gemini-2.5-flash",
    }
    sent = await acreate_charge(
        usage=gemini_rest, settings=settings, account_id="acme", user_id="alice", charge_type="completion"
    )
    [(key, charge)] = await read_charges(settings)
    assert key == b"acme"
    assert charge["event_id"] == sent.event_id
    assert (charge["provider"], charge["model"]) == ("googleai", "gemini-2.5-flash")
    assert (charge["completion_tokens"], charge["reasoning_tokens"], charge["total_tokens"]) == (
        1500,
        1200,
        1512,
    )
