"""Logging for the worker and the commands: text or JSON lines, secrets redacted either way.

Why a dictConfig handed to Faust: `faust.Worker` (mode) replaces the root logger's handlers when
it starts, so a handler installed before it would vanish. Given `logging_config`, it installs
ours instead, and Faust's, aiokafka's and our own records all leave through one handler, as one
JSON object per line with BILLING_LOG_FORMAT=json.

Why redaction in the handler, not just care at each call site: a library may log a URL or an
exception text that carries a credential (asyncpg and aiokafka errors can quote their
arguments). The filter masks URL passwords (`user:password@`, `?password=`; see
`streams.redaction`) and every configured secret value in the final text of every record,
including tracebacks.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from streams.config.settings import Settings
from streams.redaction import redact_text

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Renders each record's message (and traceback) once, redacted, before any formatter."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        # Very short values would mask ordinary words; the URL rule still covers a DSN's password.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = redact_text(message, self.secrets), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, app, plus `extra=` fields."""

    def __init__(self, app: str = "billing-streams") -> None:
        super().__init__()
        self.app = app

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "app": self.app,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                plain = isinstance(value, str | int | float | bool | list | tuple | dict | None)
                entry[key] = value if plain else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def dict_config(
    settings: Settings, stream: str = "ext://sys.stderr", level: str | None = None
) -> dict[str, Any]:
    """A logging.config.dictConfig for BILLING_LOG_FORMAT/BILLING_LOG_LEVEL (`level` overrides)."""
    level = (level or settings.log_level).upper()
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {"()": JsonFormatter, "app": settings.app_id}
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter, "secrets": tuple(settings.secret_values())}},
        "formatters": {"billing": formatter},
        "handlers": {
            "billing": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": "billing",
                "filters": ["redact"],
            }
        },
        "root": {"level": level, "handlers": ["billing"]},
    }


def configure(settings: Settings, level: str | None = None) -> None:
    """Configure logging outside a running Faust worker (e.g. `billing` commands at WARNING)."""
    import logging.config

    logging.config.dictConfig(dict_config(settings, level=level))
    logging.captureWarnings(True)
