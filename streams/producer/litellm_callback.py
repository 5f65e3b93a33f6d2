"""A LiteLLM callback that emits one charge per successful LLM call (`billing-streams[litellm]`).

    import litellm
    from streams.producer.litellm_callback import BillingCallback
    litellm.callbacks = [BillingCallback()]
    litellm.completion(..., metadata={"account_id": "acme", "user_id": "alice"})

Why a thread of its own: LiteLLM calls `log_success_event` from a worker thread (sync calls) and
`async_log_success_event` on the caller's loop (async calls), while `ChargeProducer` belongs to
one event loop. A private loop owns the producer and both hooks hand charges to it, so neither
the caller's loop nor its response waits for Kafka.

Why `litellm_call_id` is the event_id: if LiteLLM ever reports a call twice (retries of the
logging path, both hooks), the worker's event_id dedup counts it once.

LiteLLM normalises every provider's usage to the OpenAI chat shape (Anthropic cache reads and
writes inside prompt_tokens, cache reads in prompt_tokens_details.cached_tokens, writes in
prompt_tokens_details.cache_write_tokens, Gemini thoughts inside completion_tokens), so
`streams.charge.usage` reads it with the OpenAI chat rule.

LiteLLM's own estimate of the call's cost (`response_cost`, a float in USD) travels with the
charge as `reported_cost_nanos`, rounded once to whole nano-units, and is summed beside the cost
so the two can be reconciled; what is billed is always the price book's exact cost.

Settings (environment; constructor arguments win): BILLING_LITELLM_ACCOUNT_KEY (default
`account_id`) and BILLING_LITELLM_USER_KEY (default `user_id`) name the metadata keys holding
the account and user; on the LiteLLM proxy e.g. `user_api_key_team_id`/`user_api_key_user_id`.
BILLING_LITELLM_CHARGE_TYPE (default `completion`) is the charge type of non-embedding calls.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError(
        "streams.producer.litellm_callback needs LiteLLM: pip install 'billing-streams[litellm]'"
    ) from exc

from schemas.charge import MAX_REPORTED_NANOS, Charge
from streams.charge.usage import parse_usage, usage_of
from streams.config.settings import Settings, get_settings
from streams.errors import UsageError
from streams.producer.producer import ChargeProducer, to_charge
from streams.rules.pricing import rounded

log = logging.getLogger(__name__)

#: LiteLLM's custom_llm_provider -> our provider slug (`googleai` for Gemini).
PROVIDER_SLUGS: Mapping[str, str] = {
    "gemini": "googleai",
    "vertex_ai": "googleai",
    "vertex_ai_beta": "googleai",
}
_EMBEDDING_CALLS = frozenset({"embedding", "aembedding"})
_METADATA_SOURCES = ("metadata", "litellm_metadata")


class _Sender:
    """A ChargeProducer on a private event loop in a daemon thread; thread-safe `submit`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="billing-litellm", daemon=True)
        self._thread.start()
        self._producer: ChargeProducer | None = None

    def submit(self, charge: Charge) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(self._deliver(charge), self._loop)

    async def _deliver(self, charge: Charge) -> Any:
        if self._producer is None:
            producer = ChargeProducer(self.settings)
            await producer.start()  # raises BrokerUnavailableError after its retries
            self._producer = producer
        return await (await self._producer.send(charge))

    def close(self, timeout: float) -> None:
        async def stop() -> None:
            if self._producer is not None:
                await self._producer.close()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()


class BillingCallback(CustomLogger):
    """Emits a charge for each successful call; failures are logged with the charge itself.

    `sent`, `failed` (charges with their error) and `unattributed` (call ids without an account
    or user in their metadata) let an operator, and the tests, see every outcome.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        account_key: str | None = None,
        user_key: str | None = None,
        charge_type: str | None = None,
        bill_cache_hits: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings or get_settings()
        self.account_key = account_key or self.settings.litellm_account_key
        self.user_key = user_key or self.settings.litellm_user_key
        self.charge_type = charge_type or self.settings.litellm_charge_type
        self.bill_cache_hits = bill_cache_hits  # a LiteLLM cache hit calls no provider: no tokens
        self.sent = 0
        self.failed: list[tuple[dict[str, Any], str]] = []
        self.unattributed: list[str] = []
        self._sender: _Sender | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)

    # LiteLLM's hooks: keyword names must stay as LiteLLM passes them.
    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._emit(kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._emit(kwargs, response_obj)

    def charge_for(self, kwargs: Mapping[str, Any], response_obj: Any) -> Charge | None:
        """The charge for one call, or None when it cannot be attributed (logged)."""
        call_id = str(kwargs.get("litellm_call_id") or "")
        metadata = _metadata(kwargs)
        account, user = metadata.get(self.account_key), metadata.get(self.user_key)
        if not account or not user:
            log.error(
                "LiteLLM call %s not billed: metadata lacks %r or %r (set them per call, or name "
                "other keys in BILLING_LITELLM_ACCOUNT_KEY/BILLING_LITELLM_USER_KEY)",
                call_id,
                self.account_key,
                self.user_key,
            )
            self.unattributed.append(call_id)
            return None
        response = kwargs.get("complete_streaming_response") or response_obj
        tokens = parse_usage(usage_of(response)).charge_fields()
        provider = str(kwargs.get("custom_llm_provider") or "unknown").lower()
        charge_type = "embedding" if kwargs.get("call_type") in _EMBEDDING_CALLS else self.charge_type
        logged = kwargs.get("standard_logging_object") or {}
        ended = logged.get("endTime")  # epoch seconds; LiteLLM's end_time is a naive local datetime
        occurred = datetime.fromtimestamp(ended, UTC) if isinstance(ended, int | float) else datetime.now(UTC)
        model = getattr(response, "model", None) or kwargs.get("model")
        # LiteLLM passes response_cost None when it could not price the call; its logging object
        # may still carry one.
        cost = kwargs.get("response_cost")
        cost = logged.get("response_cost") if cost is None else cost
        return to_charge(
            {
                **tokens,
                "event_id": call_id or None,
                "occurred_at": occurred,
                "account_id": str(account),
                "user_id": str(user),
                "provider": PROVIDER_SLUGS.get(provider, provider),
                "charge_type": charge_type,
                "model": str(model)[:512] if model else None,
                "session_key": _text(metadata.get("session_key")),
                "reference": _text(getattr(response, "id", None)),
                "reported_cost_nanos": reported_nanos(cost),
            }
        )

    def _emit(self, kwargs: dict[str, Any], response_obj: Any) -> None:
        if kwargs.get("cache_hit") and not self.bill_cache_hits:
            return
        try:
            charge = self.charge_for(kwargs, response_obj)
        except (UsageError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            log.error("LiteLLM call %s not billed: %s", kwargs.get("litellm_call_id"), exc)
            self.failed.append(({"litellm_call_id": kwargs.get("litellm_call_id")}, str(exc)))
            return
        if charge is None:
            return
        with self._lock:
            if self._sender is None:
                self._sender = _Sender(self.settings)
            future = self._sender.submit(charge)
            self._pending.add(future)
        future.add_done_callback(lambda done: self._delivered(charge, done))

    def _delivered(self, charge: Charge, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
        error = future.exception()
        if error is None:
            self.sent += 1
            return
        # The charge in the log line is the last copy: an operator can re-send it with `billing produce`.
        log.error("charge not delivered (%s): %s", error, charge.model_dump_json(exclude_none=True))
        self.failed.append((charge.to_wire(), str(error)))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every charge handed over so far is delivered or has failed."""
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the producer thread (also registered with atexit)."""
        self.flush(timeout)
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close(timeout)


def _metadata(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata of a call: `metadata=` of the SDK call, or the proxy's litellm_metadata."""
    params = kwargs.get("litellm_params") or {}
    merged: dict[str, Any] = {}
    for source in (kwargs, params):
        for name in _METADATA_SOURCES:
            value = source.get(name)
            if isinstance(value, Mapping):
                merged = {**value, **merged}  # earlier sources win
    return merged


def reported_nanos(cost: Any) -> int | None:
    """LiteLLM's response_cost in whole nano-units (its shortest decimal spelling, rounded half to
    even), or None when it is absent or not a finite, non-negative number."""
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    amount = Decimal(repr(cost))  # the float's shortest decimal spelling, not its binary expansion
    if not amount.is_finite() or amount < 0:
        return None
    nanos = rounded(amount)
    return nanos if nanos <= MAX_REPORTED_NANOS else None


def _text(value: Any) -> str | None:
    return str(value)[:512] if value else None
