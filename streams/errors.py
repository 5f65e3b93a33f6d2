"""Every exception billing-streams raises on purpose, in one hierarchy under `BillingError`.

Why one module: a caller (an app emitting charges, a supervisor script, the CLI) needs one
`except BillingError` to tell "the pipeline refused or could not do this" from a bug, and the
CLI maps each branch to an exit code (`streams.cli.errors`). Nothing here imports a client
library, so the producer library, the worker and the operator jobs can all raise them.

    BillingError
    ├── ConfigurationError          a BILLING_* setting that cannot work as given
    ├── ServiceUnreachable          Kafka or Postgres does not answer: start it, retry later
    │   ├── BrokerUnreachableError  no broker at the bootstrap address
    │   └── BrokerUnavailableError  the producer gave up connecting (also a DeliveryError)
    ├── NotReadyError               the database is missing or not migrated
    ├── BrokerError                 a topic cannot be set up (e.g. TopicMismatchError)
    ├── EmbeddedPostgresError       the dev-only private Postgres cannot start or stop
    ├── DeliveryError               charges that did not reach Kafka after all retries
    ├── SinkFatalError              Postgres refused a flush for good (SinkDataError: one record)
    ├── InputError (ValueError)     input refused as given: JsonInputError, UsageError
    ├── RebuildRefused              a rebuild would lose charges; nothing changed
    ├── GroupBusyError              the consumer group has live members
    ├── ApiError                    an HTTP refusal of `billing api`, with its status
    └── BadRequest (ValueError)     a dashboard query refused with 400
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class BillingError(Exception):
    """Raised on purpose by billing-streams; anything else escaping the package is a bug."""


class ConfigurationError(BillingError):
    """A BILLING_* setting that cannot work as given; the message names it, never its value."""


class ServiceUnreachable(BillingError):
    """Kafka or Postgres does not answer; nothing else is wrong."""


class NotReadyError(BillingError):
    """The database is missing or its schema is older than this code (`billing migrate`)."""


class BrokerError(BillingError):
    """A broker or topic could not be started, stopped or set up (message is for humans)."""


class BrokerUnreachableError(BrokerError, ServiceUnreachable):
    """No broker answers at the bootstrap address (start one; nothing else is wrong)."""


class TopicMismatchError(BrokerError):
    """A topic exists with another partition count than BILLING_PARTITIONS."""


class EmbeddedPostgresError(BillingError):
    """The private Postgres could not be reached, created, started or stopped."""


class FailedRecord(NamedTuple):
    """A record given up on; its bytes are kept so that a caller can store or resend them."""

    key: bytes
    value: bytes
    charges: int
    error: str


class DeliveryError(BillingError):
    """Charges that did not reach Kafka after all retries (`failures` says which records)."""

    def __init__(self, message: str, failures: list[FailedRecord] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class BrokerUnavailableError(DeliveryError, ServiceUnreachable):
    """No connection to Kafka at all (after retries), so nothing was sent."""


class SinkFatalError(BillingError):
    """Postgres refused the write for a reason retrying cannot fix (schema, rights)."""


class SinkDataError(SinkFatalError):
    """Postgres refused a value of the batch: one of its records is to blame, not the sink."""


class InputError(BillingError, ValueError):
    """Input that cannot be billed as given; the message says what to change."""


class JsonInputError(InputError):
    """Bytes that are not one JSON value; `reason` is what the DLQ and `billing produce` show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class UsageError(InputError):
    """Usage that cannot be billed as given: absent, of unknown shape, or inconsistent counts."""


class RebuildRefused(BillingError, ValueError):
    """The rebuild would lose charges or read the wrong topic; nothing was changed."""


class GroupBusyError(BillingError, RuntimeError):
    """Workers are members of the group, so its offsets are theirs to commit, not ours."""

    def __init__(self, group: str, members: list[str], detail: str, live: bool = True) -> None:
        self.group, self.members = group, members
        names = ", ".join(members) if members else "(none listed)"
        what = "live member(s)" if live else "member(s) listed"
        super().__init__(f"consumer group {group!r} has {len(members)} {what}: {names}; {detail}")


class ApiError(BillingError):
    """Raised anywhere in an HTTP request to answer `status` with an error body."""

    def __init__(
        self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = dict(headers or {})


class BadRequest(BillingError, ValueError):
    """A request the dashboard refuses with 400; `field` names the parameter at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
