"""How a delivery to Kafka fails, as the producer reports it (never swallowed: see producer)."""

from __future__ import annotations

from aiokafka.errors import KafkaTimeoutError


def retriable(exc: BaseException) -> bool:
    # aiokafka does not mark KafkaTimeoutError (an expired batch: broker away for a while)
    # retriable, but a broker that comes back is exactly what retrying is for.
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError | OSError)


def describe_error(exc: BaseException | None) -> str:
    """One short line (type and message, capped) for logs and errors; never a record's bytes."""
    name, text = type(exc).__name__, str(exc)
    return (text if text.startswith(name) else f"{name}: {text}" if text else name)[:300]
