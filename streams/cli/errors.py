"""Failures as one line with a next step, and the exit codes of docs/operations.md.

Why exit codes by cause: a supervisor (systemd, Kubernetes, a script) decides differently for
"a service is not up yet" (retry later), "the database is not migrated" (a person must act) and
"a bad option" (the command line is wrong). Why one line: a 100-line traceback hides the one
sentence an operator needs; `--debug` (or BILLING_LOG_LEVEL=debug) brings the traceback back.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import click

from streams.errors import (
    BillingError,
    BrokerUnavailableError,
    BrokerUnreachableError,
    ConfigurationError,
    NotReadyError,
    ServiceUnreachable,
)
from streams.redaction import redact_text, url_target

T = TypeVar("T")

#: Exit status -> meaning; docs/operations.md lists the same table (a test compares them).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "the command failed (a refusal, rejected input, a mismatch, an unexpected error)",
    2: "usage: a bad option, argument or BILLING_* setting",
    3: "`billing worker` stopped on a fatal error, its batch unacknowledged (see its last log lines)",
    4: "a service is unreachable: the Kafka broker or Postgres (start it, then run again)",
    5: "the database is not ready: missing, or not migrated (`billing migrate`)",
}
BROKER_HINT = "is the broker at {bootstrap} running? `billing dev up` starts one"
POSTGRES_HINT = "is Postgres running there? `billing dev up` starts one"


class Failure(click.ClickException, BillingError):
    """A failure worth one line (exit 1)."""

    exit_code = 1


class UsageFailure(Failure):
    """A bad option value or setting (exit 2, like click's usage errors)."""

    exit_code = 2


class Unreachable(Failure):
    """Kafka or Postgres does not answer (exit 4)."""

    exit_code = 4


class NotReady(Failure):
    """The database is missing or its schema is not migrated (exit 5)."""

    exit_code = 5


def debug_enabled() -> bool:
    """`billing --debug ...` or BILLING_LOG_LEVEL=debug: show tracebacks, not just one line."""
    return os.environ.get("BILLING_LOG_LEVEL", "").strip().lower() == "debug"


def one_line(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A message flattened to one line, secrets masked."""
    return " ".join(redact_text(text, secrets).split())


def reason(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """`Type: message` of an exception, one line, redacted (a driver may quote the URL)."""
    name, text = type(exc).__name__, one_line(str(exc), secrets)
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")


def broker_unreachable(bootstrap: str, exc: BaseException | None = None) -> Unreachable:
    """No broker at BILLING_KAFKA_BOOTSTRAP."""
    why = f" ({reason(exc)})" if exc is not None else ""
    return Unreachable(
        f"no Kafka broker answers at {bootstrap}{why}; " + BROKER_HINT.format(bootstrap=bootstrap)
    )


def postgres_failure(exc: BaseException, dsn: str) -> Failure:
    """The one-line failure for an error connecting to or querying Postgres at `dsn`."""
    import asyncpg

    from streams.redaction import url_secrets

    target, secrets = url_target(dsn), url_secrets(dsn)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return NotReady(
            f"database {target} does not exist: create it (`billing dev up` does), then run `billing migrate`"
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return NotReady(
            f"the database {target} has no billing tables ({one_line(str(exc))}): run `billing migrate`"
        )
    if isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError | asyncpg.InterfaceError):
        return Unreachable(f"cannot connect to Postgres at {target}: {reason(exc, secrets)}; {POSTGRES_HINT}")
    return Failure(f"Postgres at {target}: {reason(exc, secrets)}")


async def connect(dsn: str) -> Any:
    """An asyncpg connection to `dsn`, or the one-line failure saying why not (exit 4 or 5)."""
    import asyncpg

    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise postgres_failure(exc, dsn) from exc


def translate(exc: Exception, settings: Any = None) -> click.ClickException | None:
    """The one-line failure for an exception no command handled, or None for a bug."""
    import asyncpg
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if settings is not None and isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return postgres_failure(exc, settings.dsn)
    if settings is not None and isinstance(
        exc, KafkaConnectionError | BrokerUnavailableError | BrokerUnreachableError
    ):
        return broker_unreachable(settings.kafka_bootstrap)
    if isinstance(exc, ConfigurationError):
        return UsageFailure(one_line(str(exc).splitlines()[0]))
    if isinstance(exc, ServiceUnreachable):
        return Unreachable(one_line(str(exc).splitlines()[0]))
    if isinstance(exc, NotReadyError):
        return NotReady(one_line(str(exc).splitlines()[0]))
    if isinstance(exc, BillingError):
        return Failure(one_line(str(exc).splitlines()[0]))
    if isinstance(exc, KafkaError):
        return Failure(f"Kafka: {reason(exc)}")
    return None


def first_line(exc: BaseException) -> str:
    """An exception's own message, first line only (its type name when it has none)."""
    text = str(exc)
    return one_line(text.splitlines()[0] if text.strip() else type(exc).__name__)


def run(
    work: Coroutine[Any, Any, T],
    settings: Any = None,
    *,
    network: Literal["postgres", "kafka"] | None = None,
    shown: tuple[type[Exception], ...] = (),
    hint: str = "",
) -> T:
    """Run a command's async work; every failure it can explain ends as one line and an exit code.

    The one wrapper of every command: `shown` are the command's own refusals (their first line,
    exit 1); then `translate` (BillingError, Postgres and Kafka errors by cause); an OSError or
    timeout is the failure to reach `network`, the service the command talks to. KeyError,
    IndexError and anything else unexplained are bugs: they keep their traceback for
    `BillingGroup` (one line, or the traceback with --debug). `hint` is added to the message.
    """
    try:
        return asyncio.run(work)
    except click.ClickException:
        raise
    except (KeyError, IndexError):
        raise
    except Exception as exc:
        failure = _explain(exc, settings, network, shown)
        if failure is None:
            raise
        failure.message += hint
        raise failure from exc


def _explain(
    exc: Exception, settings: Any, network: str | None, shown: tuple[type[Exception], ...]
) -> click.ClickException | None:
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if isinstance(exc, shown):
        return Failure(first_line(exc))
    if settings is not None and network == "kafka":
        if isinstance(exc, KafkaConnectionError | ConnectionError):
            return broker_unreachable(settings.kafka_bootstrap)
        if isinstance(exc, KafkaError):
            return Failure(f"Kafka at {settings.kafka_bootstrap}: {reason(exc)[:200]}")
    failure = translate(exc, settings)
    if failure is not None:
        return failure
    if settings is not None and isinstance(exc, OSError | TimeoutError):
        if network == "postgres":
            return postgres_failure(exc, settings.dsn)
        if network == "kafka":
            return Failure(f"Kafka at {settings.kafka_bootstrap}: {reason(exc)[:200]}")
    return None


def print_traceback(exc: BaseException, secrets: tuple[str, ...] = ()) -> None:
    """With --debug: the traceback, through the same redaction as the logs."""
    click.echo(redact_text("".join(traceback.format_exception(exc)).rstrip(), secrets), err=True)


def print_cause(exc: BaseException, secrets: tuple[str, ...] = ()) -> None:
    """With --debug: the traceback a one-line failure stands for (its cause or context)."""
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        print_traceback(cause, secrets)
