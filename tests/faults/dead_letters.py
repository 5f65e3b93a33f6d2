"""Records the worker must refuse, and the check that each became exactly one dead letter.

Some refusals are certain from the bytes alone (bad JSON, a wrong total, a future timestamp...);
a charge of 60 days ago is a valid charge whose fate depends on the closes: too late once a day
closed before it was applied, counted before that. It is produced as a charge like any other
and ground truth decides (`truth.expected(...).too_late`).
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.kafka.topic_reader import read_topic
from tests.faults.producers import Producers
from tests.support import produce_raw

# reason -> how to spoil a good charge into it (the account is the record's key)
SPOILERS: dict[str, Any] = {
    "invalid_json": lambda c: b"{truncated",
    "invalid_charge": lambda c: json.dumps({**c, "total_tokens": 5}).encode(),
    "negative_count": lambda c: json.dumps({**c, "prompt_tokens": -3}).encode(),
    "naive_timestamp": lambda c: json.dumps({**c, "occurred_at": "2026-11-01T10:00:00"}).encode(),
    "future_timestamp": lambda c: json.dumps(
        {**c, "occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    ).encode(),
    "key_mismatch": lambda c: json.dumps({**c, "account_id": c["account_id"] + "-other"}).encode(),
}


class DeadLetters:
    def __init__(self, settings: Any, rng: random.Random) -> None:
        self.settings, self.rng = settings, rng
        self.refused: dict[tuple[int, int], str] = {}  # (partition, offset) -> the kind of spoil

    def _base(self, account: str, when: datetime) -> dict[str, Any]:
        return {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "occurred_at": when.isoformat(),
            "account_id": account,
            "user_id": "u",
            "provider": "openai",
            "charge_type": "completion",
            "prompt_tokens": 1,
            "completion_tokens": 1,
        }

    async def produce(self, account: str, producers: Producers) -> None:
        """Half the time one spoiled record; a quarter of the time a charge of 60 days ago."""
        now = datetime.now(UTC)
        if self.rng.random() < 0.5:
            kind = self.rng.choice(sorted(SPOILERS))
            value = SPOILERS[kind](self._base(account, now))
            [meta] = await produce_raw(
                self.settings.kafka_bootstrap, self.settings.charges_topic, [(account.encode(), value, None)]
            )
            self.refused[(meta.partition, meta.offset)] = kind
        if self.rng.random() < 0.25:
            await producers.send("library", [self._base(account, now - timedelta(days=60))])

    async def check(self, too_late: set[tuple[int, int]]) -> tuple[int, int, list[str]]:
        """(letters found of those expected, expected, problems): every refused record and every
        too-late charge has a letter, with the reason expected; no valid charge has one."""
        letters: dict[tuple[int, int], set[str]] = {}
        async for records in read_topic(self.settings, self.settings.dlq_topic, settle=0.5):
            for record in records:
                letter = json.loads(record.value)
                letters.setdefault((letter["partition"], letter["offset"]), set()).add(letter["reason"])
        expected = set(self.refused) | too_late
        problems = []
        for where, reasons in letters.items():
            if where not in expected:
                problems.append(f"dead letter {sorted(reasons)} at {where} for a valid charge")
            elif where in too_late and reasons != {"too_late"}:
                problems.append(f"too-late charge at {where} dead-lettered as {sorted(reasons)}")
            elif where in self.refused and self.refused[where] in ("future_timestamp", "key_mismatch"):
                if reasons != {self.refused[where]}:
                    problems.append(f"{self.refused[where]} at {where} dead-lettered as {sorted(reasons)}")
        return len(expected & set(letters)), len(expected), problems
