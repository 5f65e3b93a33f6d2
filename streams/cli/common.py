"""What every `billing` command shares: settings loading with one-line errors."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError

from streams.cli import errors
from streams.cli.errors import UsageFailure
from streams.config.settings import Settings, get_settings

T = TypeVar("T")


def read_settings() -> Settings:
    """Settings as configured, or a one-line error naming the bad variable (never its value);
    exit status 2, as for a bad option."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = "BILLING_" + "_".join(str(p) for p in first["loc"]).upper()
        raise UsageFailure(f"bad configuration {name}: {first['msg']}") from None


def load_settings() -> Settings:
    """Settings for a command that talks to Postgres.

    When `billing dev up` had to start a private Postgres, its URL (recorded in the data dir)
    replaces BILLING_DATABASE_URL, so every command talks to the same database.
    """
    from streams.embedded.database_url import effective_database_url

    settings = read_settings()
    url = effective_database_url(settings)
    if url != settings.dsn:
        settings = settings.model_copy(update={"database_url": SecretStr(url)})
    return settings


def run_on_postgres(settings: Settings, coro: Coroutine[Any, Any, T]) -> T:
    """`errors.run` for the commands that put rows right (replay, rebuild, reprice): a refusal
    is its own first line, and aiokafka's join and retry chatter is not theirs to show."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return errors.run(coro, settings, network="postgres", shown=(ValueError, LookupError))
