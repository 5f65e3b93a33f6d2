"""Dead-letter records: the original bytes, why they were refused, and where they came from.

The envelope is JSON so an operator can read it with any Kafka tool; the payload is base64
because it may not be text at all. `billing dlq` reads these back; a redrive sends `payload`
to the charges topic again, where the event_id dedup keeps an already counted charge from
counting twice.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    index: int | None  # the element of a batch record, None for the whole record
    key: str | None
    payload: bytes
    rejected_at: str

    @property
    def coordinates(self) -> tuple[str, int, int, int | None]:
        """Identifies the refused input; a replay refuses it again at the same coordinates."""
        return (self.topic, self.partition, self.offset, self.index)


def make_dead_letter(
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    index: int | None,
    key: bytes | None,
    payload: bytes,
    now: datetime | None = None,
) -> DeadLetter:
    key_text = key.decode("utf-8", errors="replace") if key is not None else None
    when = (now or datetime.now(UTC)).isoformat()
    return DeadLetter(reason, detail, topic, partition, offset, index, key_text, payload, when)


def encode(letter: DeadLetter) -> bytes:
    body: dict[str, Any] = asdict(letter)
    body["payload"] = base64.b64encode(letter.payload).decode("ascii")
    body["v"] = ENVELOPE_VERSION
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes) -> DeadLetter:
    body = json.loads(value)
    body.pop("v", None)
    body["payload"] = base64.b64decode(body["payload"])
    return DeadLetter(**body)
