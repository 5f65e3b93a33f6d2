"""Kafka client settings in one place, so SASL/TLS reach every client the project creates."""

from __future__ import annotations

import ssl
from typing import Any

from streams.config.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL/SASL_SSL (the CA file is optional: system CAs otherwise).

    Hostname checking and certificate verification stay on: there is no setting to turn them off.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(cafile=cafile)
    if settings.kafka_ssl_certfile is not None:
        # Mutual TLS (MSK, Aiven, Confluent with mTLS): the client proves itself with a cert.
        key_password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            key_password.get_secret_value() if key_password else None,
        )
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def idempotent_producer(settings: Settings) -> bool:
    """Idempotence on by default against real Kafka; Tansu rejects aiokafka's InitProducerId v0."""
    if settings.kafka_idempotence is not None:
        return settings.kafka_idempotence
    return not settings.kafka_is_loopback
