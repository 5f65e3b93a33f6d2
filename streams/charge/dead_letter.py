"""Dead-letter records: the original bytes, why they were refused, and where they came from.

The envelope is JSON so an operator can read it with any Kafka tool; the payload is base64
because it may not be text at all. `billing dlq` reads these back; a redrive sends `payload`
to the charges topic again, where the event_id dedup keeps an already counted charge from
counting twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

ENVELOPE_VERSION = 1
# Most brokers refuse records over 1 MiB (message.max.bytes). A letter whose envelope would be
# larger keeps its coordinates and reason and a truncated payload, and says so; the whole record
# stays readable at its coordinates in the charges topic.
MAX_ENVELOPE_BYTES = 900 * 1024
_PAYLOAD_KEEP = 64 * 1024
# A redrive may lift these rules for the records it sends again (`billing dlq redrive --waive`);
# the header travels with the record, so a replay and a rebuild reach the same verdict.
WAIVE_HEADER = "billing-waive"
WAIVABLE = frozenset({"too_late", "future_timestamp"})


def waived_rules(headers: Any) -> frozenset[str]:
    """The rules a record's `billing-waive` header lifts (only the waivable ones count)."""
    if not headers:
        return frozenset()
    pairs = headers.items() if hasattr(headers, "items") else headers
    for name, value in pairs:
        if name == WAIVE_HEADER and value:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return frozenset(r.strip() for r in text.split(",")) & WAIVABLE
    return frozenset()


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
    truncated: bool = False  # the payload was cut to fit the broker: only its first bytes are here

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
    del body["truncated"]
    body["payload"] = base64.b64encode(letter.payload).decode("ascii")
    body["v"] = ENVELOPE_VERSION
    out = json.dumps(body, separators=(",", ":")).encode()
    if len(out) <= MAX_ENVELOPE_BYTES:
        return out
    body["payload"] = base64.b64encode(letter.payload[:_PAYLOAD_KEEP]).decode("ascii")
    body["truncated"] = True
    body["payload_bytes"] = len(letter.payload)
    body["payload_sha256"] = hashlib.sha256(letter.payload).hexdigest()
    body["detail"] = letter.detail[:1000]
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes) -> DeadLetter:
    body = json.loads(value)
    body.pop("v", None)
    for extra in ("payload_bytes", "payload_sha256"):
        body.pop(extra, None)
    body["payload"] = base64.b64decode(body["payload"])
    return DeadLetter(**body)
