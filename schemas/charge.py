"""The charge event: one billable LLM call, as it travels on the `charges` topic.

Counts are strict integers: a float, a numeric string or a bool is a producer bug, and in billing
a guessed number is worse than a rejected one. Unknown fields are refused for the same reason
(a typo such as `prompt_token` would otherwise bill zero tokens).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
# Counts added after the first release: left out of a record when zero, so that charges without
# them read as before on workers that predate them.
OMITTED_WHEN_ZERO = ("cache_write_tokens",)
MAX_TOKENS = 10**12  # far above any real call; keeps sums well inside bigint
MAX_REPORTED_NANOS = 10**15  # a million currency units for one call: beyond any real price
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
_NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d*)?\s*")


def _normalize_slug(value: Any) -> Any:
    # Lower-case before the pattern is checked (pydantic checks `pattern` before `to_lower`).
    return value.strip().lower() if isinstance(value, str) else value


# No silent trimming: " alice" and "alice" would bill as two users. Surrounding space is refused,
# and so are control characters (U+0000-U+001F, U+007F): Postgres refuses NUL in text, and an
# identifier is printed in terminals and CSV files where control characters do harm.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f"
IDENTIFIER_PATTERN = rf"^[^\s{CONTROL_CHARACTERS}](?:[^{CONTROL_CHARACTERS}]*[^\s{CONTROL_CHARACTERS}])?$"
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)]
Slug = Annotated[str, BeforeValidator(_normalize_slug), StringConstraints(pattern=SLUG_PATTERN)]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
Note = Annotated[str, StringConstraints(max_length=512)]


def new_event_id() -> str:
    """A fresh idempotency key (UUID4 text)."""
    return str(uuid.uuid4())


class Charge(BaseModel):
    """One charge. `total_tokens` is derived when absent and must match when present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    occurred_at: AwareDatetime
    account_id: Identifier
    user_id: Identifier
    provider: Slug
    charge_type: Slug
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count | None = None
    cached_tokens: Count = 0
    cache_write_tokens: Count = 0
    reasoning_tokens: Count = 0
    # What the caller's own tooling said the call cost (LiteLLM's response_cost), in whole
    # nano-units: kept to reconcile with, never used as the cost (that comes from the price book).
    reported_cost_nanos: Annotated[StrictInt, Field(ge=0, le=MAX_REPORTED_NANOS)] | None = None
    model: Note | None = None
    session_key: Note | None = None
    reference: Note | None = None
    user_profile_id: Annotated[str, StringConstraints(max_length=128)] | StrictInt | None = None
    schema_version: Annotated[StrictInt, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _no_naive_time(cls, value: Any) -> Any:
        # pydantic says "timezone_aware" too; this names the rule the way an operator reads it.
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("occurred_at is naive; send an offset or Z (never local time)")
        # pydantic would read a number (or a string of digits) as unix time; the contract is
        # RFC 3339 text, and a guessed unit (seconds? milliseconds?) bills the wrong day.
        if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
            raise PydanticCustomError(
                "datetime_type", "occurred_at must be RFC 3339 text with an offset or Z, not a number"
            )
        return value

    @model_validator(mode="after")
    def _token_arithmetic(self) -> Charge:
        derived = self.prompt_tokens + self.completion_tokens
        if self.total_tokens is None:
            if derived > MAX_TOKENS:
                raise ValueError(f"total_tokens (derived) exceeds the limit {MAX_TOKENS}")
            object.__setattr__(self, "total_tokens", derived)
        elif self.total_tokens != derived:
            raise ValueError("total_tokens differs from prompt_tokens + completion_tokens")
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError("cached_tokens exceed prompt_tokens (cached reads are part of them)")
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ValueError(
                "cached_tokens + cache_write_tokens exceed prompt_tokens (reads and writes are "
                "separate parts of them)"
            )
        if self.reasoning_tokens > self.completion_tokens:
            raise ValueError("reasoning_tokens exceed completion_tokens (they are part of them)")
        return self

    @property
    def total(self) -> int:
        """total_tokens, never None after validation."""
        return self.total_tokens if self.total_tokens is not None else 0

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict a producer sends (None fields left out to keep records small, and
        no cache writes left out too, so that charges without them read as before on workers
        that predate the field)."""
        wire = self.model_dump(mode="json", exclude_none=True)
        for name in OMITTED_WHEN_ZERO:
            if not wire[name]:
                del wire[name]
        return wire
