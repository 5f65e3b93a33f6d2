"""One charge, sent and acknowledged: the call an app makes per LLM call when it has no producer
of its own to keep (a Celery task, a Django view, a script). Each call opens a producer, sends
without linger and waits for Kafka, so it is simple and slow; long-lived code keeps a
`ChargeProducer`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.charge import Charge
from streams.charge.records import to_charge
from streams.config.settings import Settings
from streams.producer.producer import ChargeProducer


async def acreate_charge(*, settings: Settings | None = None, usage: Any = None, **fields: Any) -> Charge:
    """Validate one charge (the seed task's keyword names), send it, wait until Kafka has it.

    `usage` takes a provider response or its usage object (OpenAI, Anthropic, Gemini; see
    streams.charge.usage) and fills in the token counts, provider and model. Token counts default to 0.
    Raises ValueError (pydantic's ValidationError) for bad input and `DeliveryError` when the
    charge could not be delivered after retries.
    """
    if usage is not None:
        from streams.charge.usage import merge_usage

        fields = merge_usage(fields, usage)
    fields.setdefault("prompt_tokens", 0)
    fields.setdefault("completion_tokens", 0)
    charge = to_charge(fields)
    async with ChargeProducer(settings, linger_ms=0) as producer:
        await producer.send(charge)
    return charge


def create_charge(*, settings: Settings | None = None, usage: Any = None, **fields: Any) -> Charge:
    """Blocking `acreate_charge` for synchronous callers (Celery tasks, Django views, scripts)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(acreate_charge(settings=settings, usage=usage, **fields))
    raise RuntimeError(
        "create_charge() blocks and cannot run inside a running event loop; "
        "use `await acreate_charge(...)` there"
    )
