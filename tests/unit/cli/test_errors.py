"""One wrapper for every command: each failure it can explain is one line with its exit code,
and what it cannot explain (a bug) keeps its traceback."""

from __future__ import annotations

import click
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from streams.cli import errors
from streams.config.settings import Settings
from streams.errors import (
    BillingError,
    BrokerError,
    BrokerUnreachableError,
    ConfigurationError,
    DeliveryError,
    NotReadyError,
    SinkFatalError,
)

SETTINGS = Settings(database_url="postgresql://billing:s3cret@db.example:5432/billing")


async def _raise(exc: Exception) -> None:
    raise exc


def _failure(exc: Exception, **options: object) -> click.ClickException:
    with pytest.raises(click.ClickException) as caught:
        errors.run(_raise(exc), SETTINGS, **options)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigurationError("BILLING_DASHBOARD_TOKEN is set but blank"), 2),
        (BrokerUnreachableError("no broker"), 4),
        (NotReadyError("schema 3, needs 4"), 5),
        (BrokerError("topic charges has 4 partitions"), 1),
        (DeliveryError("3 charges not delivered\nrecord 1: timeout"), 1),
        (SinkFatalError("permission denied"), 1),
    ],
)
def test_billing_errors_end_as_one_line_with_their_exit_code(exc: Exception, code: int) -> None:
    failure = _failure(exc)
    assert failure.exit_code == code
    assert "\n" not in failure.message and failure.message


def test_every_package_error_is_a_billing_error() -> None:
    for exc in (ConfigurationError, BrokerUnreachableError, NotReadyError, DeliveryError, SinkFatalError):
        assert issubclass(exc, BillingError)
    assert issubclass(errors.Failure, BillingError)


def test_the_network_decides_what_an_os_error_means() -> None:
    to_postgres = _failure(ConnectionRefusedError("refused"), network="postgres")
    assert to_postgres.exit_code == 4 and "Postgres at db.example:5432/billing" in to_postgres.message
    assert "s3cret" not in to_postgres.message
    to_kafka = _failure(KafkaConnectionError("refused"), network="kafka")
    assert to_kafka.exit_code == 4 and "no Kafka broker answers" in to_kafka.message
    kafka_other = _failure(KafkaTimeoutError(), network="kafka")
    assert kafka_other.exit_code == 1 and kafka_other.message.startswith("Kafka at ")


def test_a_commands_own_refusals_are_shown_as_their_first_line() -> None:
    failure = _failure(ValueError("--to-offsets: 3:x is not an offset\ndetails"), shown=(ValueError,))
    assert failure.exit_code == 1 and failure.message == "--to-offsets: 3:x is not an offset"


def test_a_hint_is_added() -> None:
    failure = _failure(BrokerError("cannot create topic"), hint=" (nothing was sent)")
    assert failure.message == "cannot create topic (nothing was sent)"


@pytest.mark.parametrize("bug", [KeyError("x"), IndexError("y"), RuntimeError("z"), ValueError("v")])
def test_bugs_keep_their_traceback(bug: Exception) -> None:
    with pytest.raises(type(bug)):
        errors.run(_raise(bug), SETTINGS, network="postgres")
