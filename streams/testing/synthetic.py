"""Deterministic, realistic synthetic charges for demos, benchmarks and tests.

Realistic where it matters to the pipeline: a few big accounts and a long tail (Zipf-like, so
partitions and batches are skewed as in production), several users per account, every provider
and charge type, plausible token counts with cached and reasoning parts, and event times spread
over the last `days` days but never in the future (the worker would reject those). Deterministic
per seed, event_ids included, so that re-sending a seed is a re-send the worker must dedup.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from schemas.charge import Charge

ZIPF_EXPONENT = 1.1

# provider -> (share of traffic, models, models that produce reasoning tokens)
PROVIDERS: dict[str, tuple[float, tuple[str, ...], frozenset[str]]] = {
    "openai": (0.45, ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1"), frozenset({"o3-mini"})),
    "anthropic": (0.25, ("claude-sonnet-4", "claude-3-5-haiku"), frozenset({"claude-sonnet-4"})),
    "googleai": (
        0.20,
        ("gemini-2.0-flash", "gemini-1.5-pro", "gemini-2.5-pro"),
        frozenset({"gemini-2.5-pro"}),
    ),
    "metaai": (0.10, ("llama-3.3-70b", "llama-3.1-8b"), frozenset()),
}
CHARGE_TYPES: dict[str, float] = {"completion": 0.8, "tool": 0.12, "plugin": 0.08}
PLUGINS = ("web-search", "calculator", "weather", "sql-runner", "image-caption")


def account_weights(accounts: int) -> list[float]:
    """Account i's share ∝ 1/(i+1)^1.1: a few big customers, a long tail of small ones."""
    return [1.0 / (i + 1) ** ZIPF_EXPONENT for i in range(accounts)]


def account_id(index: int) -> str:
    return f"acct-{index:05d}"


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """Small counts are common and large ones rare, as in real prompts and completions."""
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def synthetic_charges(
    n: int,
    days: int = 7,
    accounts: int = 50,
    seed: int = 0,
    now: datetime | None = None,
) -> Iterator[Charge]:
    """`n` valid charges, the same for the same (n, days, accounts, seed, now).

    Without `now` the times are relative to the current clock; the event_ids, accounts, users
    and counts still depend on the seed alone. Times lie in (now - days, now].
    """
    if n < 0 or days < 1 or accounts < 1:
        raise ValueError("need n >= 0, days >= 1 and accounts >= 1")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rng = random.Random(seed)
    rand = rng.random
    cum_accounts = list(accumulate(account_weights(accounts)))
    users = [rng.randint(1, 5) for _ in range(accounts)]  # each account's team size
    providers = list(PROVIDERS)
    cum_providers = list(accumulate(PROVIDERS[p][0] for p in providers))
    types = list(CHARGE_TYPES)
    cum_types = list(accumulate(CHARGE_TYPES.values()))
    span_us = days * 86_400 * 1_000_000
    for _ in range(n):
        # bisect on cumulative weights: what random.choices does, minus its per-call overhead
        account = min(bisect(cum_accounts, rand() * cum_accounts[-1]), accounts - 1)
        provider = providers[min(bisect(cum_providers, rand() * cum_providers[-1]), len(providers) - 1)]
        charge_type = types[min(bisect(cum_types, rand() * cum_types[-1]), len(types) - 1)]
        _, models, reasoners = PROVIDERS[provider]
        model = models[int(rand() * len(models))]
        user = int(rand() * users[account])
        prompt = _log_uniform(rng, 10, 4000)
        completion = _log_uniform(rng, 1, 2000)
        cached = int(rand() * (prompt + 1)) if rand() < 0.3 else 0
        reasoning = int(rand() * (completion + 1)) if model in reasoners else 0
        occurred_at = now - timedelta(microseconds=int(rand() * span_us))
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        session = f"sess-{rng.getrandbits(48):012x}" if rand() < 0.7 else None
        reference = PLUGINS[int(rand() * len(PLUGINS))] if charge_type != "completion" else None
        yield Charge(
            event_id=event_id,
            occurred_at=occurred_at,
            account_id=account_id(account),
            user_id=f"{account_id(account)}-user-{user}",
            provider=provider,
            charge_type=charge_type,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            model=model,
            session_key=session,
            reference=reference,
        )
