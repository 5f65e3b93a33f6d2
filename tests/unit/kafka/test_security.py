"""SASL/TLS settings reach every Kafka client the project creates; secrets come from files.

No SASL broker is needed: each client is constructed from Settings exactly as the code does and
its configuration is read back. A static check makes sure no module builds an aiokafka client
without `aiokafka_options`, so a client added later cannot skip the security settings.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "s3cr3t-sasl-password"
CASES = [
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_SSL", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SSL", None),
]


def secure(protocol: str, mechanism: str | None, **extra: Any) -> Settings:
    sasl = {"kafka_sasl_username": "svc-billing", "kafka_sasl_password": PASSWORD} if mechanism else {}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap="kafka-1.example:9093,kafka-2.example:9093",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        **sasl,
        **extra,
    )


def assert_client(client: Any, protocol: str, mechanism: str | None) -> None:
    """`client` is aiokafka's AIOKafkaClient inside a producer, consumer or admin client."""
    assert client._bootstrap_servers == "kafka-1.example:9093,kafka-2.example:9093"
    assert client._security_protocol == protocol
    if mechanism:
        assert client._sasl_mechanism == mechanism
        assert client._sasl_plain_username == "svc-billing"
        assert client._sasl_plain_password == PASSWORD
    if protocol.endswith("SSL"):
        context = client._ssl_context
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    else:
        assert client._ssl_context is None


@pytest.mark.parametrize(("protocol", "mechanism"), CASES)
async def test_aiokafka_clients_get_sasl_and_tls(protocol: str, mechanism: str | None) -> None:
    settings = secure(protocol, mechanism)
    producer = AIOKafkaProducer(**aiokafka_options(settings))
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), group_id="g")
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert_client(client, protocol, mechanism)
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


@pytest.mark.parametrize(("protocol", "mechanism"), CASES)
async def test_faust_worker_clients_get_sasl_and_tls(protocol: str, mechanism: str | None) -> None:
    """The producer and the group consumer Faust builds for `billing worker`."""
    import asyncio

    from streams.worker.app import create_app

    app = create_app(secure(protocol, mechanism))
    producer = app.producer._new_producer()
    consumer = app.consumer._thread._create_consumer(asyncio.get_running_loop())
    try:
        for client in (producer.client, consumer._client):
            # Faust hands aiokafka one "host:port" per bootstrap server.
            client._bootstrap_servers = ",".join(client._bootstrap_servers)
            assert_client(client, protocol, mechanism)
        assert "password" not in repr(app.conf.broker_credentials).lower()
        assert PASSWORD not in repr(app.conf.broker_credentials)
    finally:
        await producer.stop()
        await consumer.stop()


async def test_charge_producer_gets_sasl_and_tls() -> None:
    from streams.producer.producer import ChargeProducer

    captured: dict[str, Any] = {}

    class Fake:
        def __init__(self, **kwargs: Any) -> None:
            captured.update(kwargs)

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

        async def flush(self) -> None:
            return None

    settings = secure("SASL_SSL", "SCRAM-SHA-256")
    producer = ChargeProducer(settings, client_factory=Fake)  # type: ignore[arg-type]
    await producer.start()
    real = AIOKafkaProducer(**{k: v for k, v in captured.items() if k != "enable_idempotence"})
    try:
        assert_client(real.client, "SASL_SSL", "SCRAM-SHA-256")
        assert captured["enable_idempotence"] is True  # real Kafka: idempotence on by default
    finally:
        await real.stop()


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    """BILLING_KAFKA_SSL_CERTFILE/KEYFILE reach the context (a missing file fails loudly)."""
    from streams.kafka.client import ssl_context

    settings = secure("SSL", None, kafka_ssl_certfile=tmp_path / "missing.pem")
    with pytest.raises((FileNotFoundError, ssl.SSLError)):
        ssl_context(settings)


def _aiokafka_calls(tree: ast.AST) -> list[ast.Call]:
    names = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in names
    ]


def _calls_options(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and getattr(n.func, "id", "") == "aiokafka_options" for n in ast.walk(node)
    )


def test_every_aiokafka_client_in_the_code_uses_aiokafka_options() -> None:
    # The embedded broker's readiness probe talks to Tansu on loopback only (never secured).
    allowed = {("streams/embedded/broker.py", "AIOKafkaClient")}
    offenders = []
    for path in sorted((ROOT / "streams").glob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        # Names bound to an expression that calls aiokafka_options (`options = aiokafka_options(s)`).
        bound = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _calls_options(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for call in _aiokafka_calls(tree):
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            uses_options = any(
                _calls_options(kw.value) or (isinstance(kw.value, ast.Name) and kw.value.id in bound)
                for kw in call.keywords
                if kw.arg is None
            )
            if not uses_options and (rel, name) not in allowed:
                offenders.append(f"{rel}:{call.lineno} {name}")
    assert not offenders, f"aiokafka clients built without aiokafka_options: {offenders}"


def test_secret_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text("postgresql://svc:file-pw-123@db.example/billing\n")
    (tmp_path / "pw").write_text("sasl-file-pw\r\n")
    monkeypatch.setenv("BILLING_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.dsn == "postgresql://svc:file-pw-123@db.example/billing"
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "sasl-file-pw"
    assert "file-pw" not in repr(settings)


def test_secret_file_errors_name_the_variable_not_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("both-set-pw")
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD", "env-pw-value")
    with pytest.raises(ValidationError) as both:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "not both" in str(both.value) and "pw-value" not in str(both.value)
    monkeypatch.delenv("BILLING_KAFKA_SASL_PASSWORD")
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ValidationError) as missing:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "BILLING_KAFKA_SASL_PASSWORD_FILE" not in str(missing.value)  # loc is the field
    assert missing.value.errors()[0]["loc"] == ("kafka_sasl_password_file",)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "empty"))
    with pytest.raises(ValidationError, match="is empty"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_password=PASSWORD,
            database_url="postgresql://u:db-secret-pw@h/d",
        )
    assert PASSWORD not in str(exc.value) and "db-secret-pw" not in str(exc.value)
    assert "BILLING_KAFKA_SASL_MECHANISM is required" in str(exc.value)
