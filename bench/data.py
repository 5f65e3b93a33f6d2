"""Seeded synthetic charges, and the ground truth Postgres must match.

`realistic` is `streams.testing.synthetic` at scale: Zipf-like accounts (a few big customers, a long
tail), 1 to 5 users each, 4 providers, 3 charge types, 7 days. `distinct_keys` makes exactly
`k` charges on `k` different daily keys (account, user, provider, date, charge_type), for the
memory and scale measurement, where the number of open keys is the variable.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.charge import Charge
from streams.testing.synthetic import CHARGE_TYPES, PROVIDERS, synthetic_charges
from tests.support import ground_truth

ACCOUNTS = 1_000  # Zipf over 1,000 accounts: ~18% of the traffic is the biggest one
DAYS = 7
UTC_ZONE = ZoneInfo("UTC")


def realistic(n: int, seed: int, now: datetime | None = None) -> list[Charge]:
    return list(synthetic_charges(n, days=DAYS, accounts=ACCOUNTS, seed=seed, now=now))


def expected_rows(charges: list[Charge], zone: ZoneInfo = UTC_ZONE) -> dict[tuple, dict[str, int]]:
    """Ground truth by `tests.support.ground_truth` (plain dict arithmetic, not the code under test)."""
    return ground_truth((c.__dict__ for c in charges), zone)


def distinct_keys(start: int, stop: int, seed: int, prefix: str = "scale") -> list[Charge]:
    """One charge on each of the daily keys numbered start..stop-1 (the same keys for the same
    numbers): 3 users x 4 providers x 3 types x 7 days per account, accounts in key order.

    Built with `model_construct` (no validation: these are known-good values, and validating a
    million of them would only slow the bench down; the worker validates them all anyway).
    """
    rng = random.Random(seed * 1_000_003 + start)
    providers, types = list(PROVIDERS), list(CHARGE_TYPES)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    per_account = 3 * len(providers) * len(types) * DAYS
    out: list[Charge] = []
    for i in range(start, stop):
        account, rest = divmod(i, per_account)
        user, rest = divmod(rest, len(providers) * len(types) * DAYS)
        provider, rest = divmod(rest, len(types) * DAYS)
        charge_type, day = divmod(rest, DAYS)
        # Spread over the day, but never in the future for today's charges.
        seconds = rng.randrange(0, 86_400) if day else rng.randrange(0, 60)
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 2000)
        acct = f"{prefix}-{account:06d}"
        out.append(
            Charge.model_construct(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                occurred_at=today - timedelta(days=day) + timedelta(seconds=seconds),
                account_id=acct,
                user_id=f"{acct}-user-{user}",
                provider=providers[provider],
                charge_type=types[charge_type],
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=0,
                reasoning_tokens=0,
                model="gpt-4o-mini",
            )
        )
    return out
