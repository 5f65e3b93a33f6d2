"""Configuration from the environment (and an optional `.env` file).

Every knob is a `BILLING_*` variable. Durations take a unit, `500ms`, `2s`, `5m`,
`1h`, `35d`, so that an operator writes what they mean (a bare `1` is refused, not read as one
second); they are stored as `timedelta`.
Secrets are `SecretStr`, so they never show in a repr, a log line or an error message, and each
may come from a file instead (`BILLING_<NAME>_FILE`, the Docker/Kubernetes secrets convention),
so that a password need not sit in the environment of every process on the machine.

Every field carries a description: docs/operations.md's configuration table is generated from
them (`python -m streams.config.reference`) and a test fails when the two differ.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.config.durations import Duration, lasting
from streams.config.secret_files import ENV_PREFIX, SecretFiles


class Settings(BaseSettings):
    """All runtime settings; see docs/operations.md's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated")
    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/billing"),
        description="Postgres URL; TLS with `?sslmode=verify-full&sslrootcert=...` (secret, `_FILE` allowed)",
    )
    charges_topic: str = Field("charges", description="topic the charges are produced to")
    dlq_topic: str = Field("charges.dlq", description="topic of rejected records (dead letters)")
    partitions: int = Field(8, ge=1, le=1024, description="partitions of both topics; bounds parallelism")
    replication_factor: int = Field(1, ge=1, description="replication factor of topics the project creates")

    timezone: str = Field("UTC", description="IANA zone whose calendar dates are the billing dates")
    grace: Duration = lasting(
        hours=1,
        description="how long past its end a day waits; it closes once every partition is read to its end after that",
    )
    # Kept so existing configurations stay valid: days close by reading each partition to its end,
    # so a quiet partition never holds a day open and no idle timeout is needed.
    idle_timeout: Duration = lasting(
        minutes=5, description="no longer used (days close once every partition is read to its end)"
    )
    flush_interval: Duration = lasting(
        seconds=2, description="at most this far behind the stream are provisional rows"
    )
    late_horizon: Duration = lasting(
        days=35,
        description="a charge whose day was closed this long (whole days) before it was read goes to the DLQ as `too_late`",
    )
    dedup_horizon: Duration = lasting(
        days=7, description="a re-sent event_id counts once within this horizon"
    )
    max_clock_skew: Duration = lasting(minutes=5, description="charges further in the future are rejected")

    app_id: str = Field("billing-streams", description="Faust app id = Kafka consumer group of the workers")
    data_dir: Path = Field(
        Path("./.billing-data"), description="local state: Faust data, embedded broker/Postgres, logs"
    )
    web_host: str = Field(
        "127.0.0.1", description="address the worker's web server binds (`0.0.0.0` inside a container)"
    )
    web_port: int = Field(6066, ge=0, le=65535, description="port of /metrics, /health, /ready")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per line")

    dashboard_host: str = Field(
        "127.0.0.1", description="address `billing dashboard` binds (loopback by default)"
    )
    dashboard_port: int = Field(8088, ge=0, le=65535, description="port of `billing dashboard`")
    dashboard_token: SecretStr | None = Field(
        None,
        description="when set, the dashboard requires it (Bearer token or Basic password; `_FILE` allowed)",
    )
    api_host: str = Field("127.0.0.1", description="address `billing api` binds (loopback by default)")
    api_port: int = Field(8080, ge=0, le=65535, description="port of `billing api` (HTTP ingest and query)")
    api_max_body_bytes: int = Field(
        5_000_000, ge=1024, description="largest request body `billing api` reads; larger is 413"
    )
    api_max_charges: int = Field(10_000, ge=1, description="most charges in one ingest request; more is 413")
    api_max_concurrency: int = Field(
        256, ge=1, description="requests `billing api` serves at once; beyond it answers 503"
    )
    api_delivery_timeout: Duration = lasting(
        seconds=10, description="how long an ingest request waits for Kafka before its 503"
    )
    api_retry_after: Duration = lasting(seconds=5, description="Retry-After of the API's 503 answers")
    api_key_cache: Duration = lasting(
        seconds=5, description="how long a verified API key is trusted before Postgres is asked again"
    )
    litellm_account_key: str = Field(
        "account_id", description="LiteLLM callback: metadata key holding the account"
    )
    litellm_user_key: str = Field("user_id", description="LiteLLM callback: metadata key holding the user")
    litellm_charge_type: str = Field(
        "completion", description="LiteLLM callback: charge type of non-embedding calls"
    )

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with SASL_*)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name (`_FILE` allowed)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret, `_FILE` allowed)")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle that signed the brokers' certificates (system CAs if unset)"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of the client key (secret, `_FILE` allowed)"
    )
    # Idempotent producing is on against real Kafka; Tansu (the embedded broker on loopback)
    # rejects aiokafka's InitProducerId. event_id dedup makes counting exact either way.
    kafka_idempotence: bool | None = Field(
        None, description="idempotent producers; unset: on unless the broker is on loopback (Tansu)"
    )
    kafka_session_timeout: Duration | None = Field(
        None,
        description="consumer group session timeout (a dead worker's partitions move after it); "
        "unset: 10s, or 2s when the broker is on loopback (Tansu, whose group join waits half of it)",
    )
    kafka_fetch_max_wait: Duration | None = Field(
        None,
        description="how long the worker's fetches may wait for records; unset: 1.5s (Faust's), "
        "or 0.1s when the broker is on loopback (Tansu answers a waiting fetch only when the wait ends)",
    )
    kafka_heartbeat_interval: Duration = lasting(
        seconds=1,
        description="consumer group heartbeat interval (at most a quarter of the session timeout is used)",
    )
    kafka_group_instance_id: str | None = Field(
        None,
        description="static group membership: a worker restarted with the same id takes its "
        "partitions back at once instead of after its old session times out; give each worker "
        "its own stable id (e.g. the pod or host name); unset: dynamic membership (best on "
        "the embedded broker, where static membership slows joins down)",
    )

    # How many Kafka records the worker gathers before it flushes (it flushes every
    # flush_interval anyway) and how long a transient Postgres error is retried per attempt.
    batch_records: int = Field(2000, ge=1, description="Kafka records gathered per flush at most")
    batch_charges: int = Field(
        20000, ge=1, description="charges per decoded chunk and Postgres transaction (bounds worker memory)"
    )
    sink_connections: int = Field(
        2, ge=1, le=16, description="Postgres connections a worker flushes on, partitions shared out"
    )
    pg_retry_max_backoff: Duration = lasting(
        seconds=10, description="longest wait between retries while Postgres is unreachable"
    )
    pg_command_timeout: Duration = lasting(
        seconds=30,
        description="deadline of every Postgres statement; a stuck one is abandoned and retried on a new connection",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values, then the environment, then secret files, then `.env`.
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

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
    def group_session_timeout(self) -> timedelta:
        """The session timeout in force: the embedded broker holds every group join for half of
        it, so there a short one makes start-up and recovery quick; on a real broker, 10 s."""
        if self.kafka_session_timeout is not None:
            return self.kafka_session_timeout
        return timedelta(seconds=2) if self.kafka_is_loopback else timedelta(seconds=10)

    @property
    def fetch_max_wait(self) -> timedelta:
        """The fetch wait in force: Kafka answers a waiting fetch when a record arrives, so there
        the wait only paces an idle consumer; the embedded broker answers when the wait ends, so
        there it is added to every record's way to the worker."""
        if self.kafka_fetch_max_wait is not None:
            return self.kafka_fetch_max_wait
        return timedelta(seconds=0.1) if self.kafka_is_loopback else timedelta(seconds=1.5)

    @property
    def group_heartbeat_interval(self) -> timedelta:
        """The heartbeat in force: four beats per session, so that one late beat on a busy
        machine does not cost the worker its partitions."""
        return min(self.kafka_heartbeat_interval, self.group_session_timeout / 4)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def dsn(self) -> str:
        """The Postgres URL; only for handing to a driver, never for printing."""
        return self.database_url.get_secret_value()

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the log redactor (never for output)."""
        from streams.redaction import url_secrets

        fields = (self.kafka_sasl_password, self.kafka_ssl_key_password, self.dashboard_token)
        values = [s.get_secret_value() for s in fields if s]
        return [v for v in (*values, *url_secrets(self.dsn)) if v]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
