"""Configuration from the environment (and an optional `.env` file).

Every knob is a `BILLING_*` variable (DESIGN.md §6). Durations accept `90`, `500ms`, `2s`, `5m`,
`1h`, `35d` so that an operator can write what they mean; they are stored as `timedelta`.
Secrets are `SecretStr`, so they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> timedelta:
    """Read `2s`, `5m`, `1h`, `35d` (or plain seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 2s, 5m, 1h, 35d)")
    number, unit = match.groups()
    try:
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f"duration out of range: {value!r}") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    """All runtime settings; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="BILLING_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/billing")
    charges_topic: str = "charges"
    dlq_topic: str = "charges.dlq"
    partitions: int = Field(8, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)

    timezone: str = "UTC"
    grace: Duration = timedelta(hours=1)
    idle_timeout: Duration = timedelta(minutes=5)
    flush_interval: Duration = timedelta(seconds=2)
    late_horizon: Duration = timedelta(days=35)
    dedup_horizon: Duration = timedelta(days=7)
    max_clock_skew: Duration = timedelta(minutes=5)

    app_id: str = "billing-streams"
    data_dir: Path = Path("./.billing-data")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    # Idempotent producing is on against real Kafka; Tansu (the embedded broker on loopback)
    # rejects aiokafka's InitProducerId. event_id dedup makes counting exact either way.
    kafka_idempotence: bool | None = None
    kafka_session_timeout: Duration = timedelta(seconds=10)
    kafka_heartbeat_interval: Duration = timedelta(seconds=1)

    # How many Kafka records the worker gathers before it flushes (it flushes every
    # flush_interval anyway) and how long a transient Postgres error is retried per attempt.
    batch_records: int = Field(2000, ge=1)
    pg_retry_max_backoff: Duration = timedelta(seconds=10)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _sasl_complete(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator (not a model one) so the error carries this field only, never the
        # whole input with its secrets.
        protocol = info.data.get("kafka_security_protocol", "PLAINTEXT")
        if protocol.startswith("SASL") and not value:
            raise ValueError("BILLING_KAFKA_SASL_MECHANISM is required with a SASL protocol")
        return value

    @property
    def kafka_is_loopback(self) -> bool:
        """True for the embedded default (a broker on this machine)."""
        hosts = [part.rsplit(":", 1)[0] for part in self.kafka_bootstrap.split(",")]
        return all(h in ("127.0.0.1", "localhost", "[::1]", "::1") for h in hosts)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def dsn(self) -> str:
        """The Postgres URL; only for handing to a driver, never for printing."""
        return self.database_url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
