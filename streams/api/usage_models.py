"""The answers of the read API, as the OpenAPI schema documents them.

The shape leaves room to grow without breaking a client: each window carries its dimensions
in `group` and its numbers in `usage`, both objects, so a new dimension (such as `model`) or a
new number (such as `cost`) is one more key, not a new layout.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from streams.api.usage_sql import Window


class Usage(BaseModel):
    """Summed counts; `late_charge_count` counts charges that arrived after their day closed.
    The cost is exact: decimal text (a JSON number would be read as a float) in `currency`;
    `unpriced_charge_count` charges had no price and are not in it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    charge_count: int
    late_charge_count: int
    cost: str = Field(description='exact decimal amount of `currency`, e.g. "12.345678901"')
    currency: str | None = Field(description="ISO 4217 code of the price book; null when nothing was priced")
    unpriced_charge_count: int


class Group(BaseModel):
    """The window's value of each group_by dimension (absent when not grouped by it)."""

    model_config = ConfigDict(extra="forbid")
    account: str | None = None
    user: str | None = None
    provider: str | None = None
    charge_type: str | None = None


class UsageWindow(BaseModel):
    start: date
    end: date = Field(description="exclusive: the first day of the next window")
    final: bool
    group: Group
    usage: Usage


class UsagePage(BaseModel):
    timezone: str = Field(description="BILLING_TIMEZONE: days, weeks and months are its calendar's")
    window: Window
    date_from: date = Field(alias="from")
    date_to: date = Field(alias="to")
    group_by: list[str]
    data: list[UsageWindow]
    next: str | None = Field(description="URL of the next page, null on the last")


class ChangedRow(BaseModel):
    """One daily row as it stands now (sent again each time it is revised)."""

    id: int
    date: date
    group: Group
    usage: Usage
    revision: int
    final: bool
    finalized_at: datetime | None
    updated_at: datetime


class ChangesPage(BaseModel):
    data: list[ChangedRow]
    cursor: str = Field(description="pass as `since` to continue after the last row of this page")
    has_more: bool
    next: str
