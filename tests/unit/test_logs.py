"""Log lines: JSON when asked (one object per line), secrets masked in any format."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from streams import logs
from streams.config.settings import Settings
from streams.redaction import redact_text

DB_PW = "db-pw-9f8e7d"
SASL_PW = "sasl-pw-1a2b3c"


def configured(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        log_format=fmt,
        app_id="app-under-test",
        database_url=f"postgresql://billing:{DB_PW}@db.example:5432/billing",
        kafka_sasl_password=SASL_PW,
    )
    stream = io.StringIO()
    config = logs.dict_config(settings)
    config["handlers"]["billing"]["stream"] = stream
    logging.config.dictConfig(config)
    return logging.getLogger("streams.test"), stream


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_carry_the_fields_and_extras() -> None:
    log, out = configured("json")
    log.info("flushed %d charges", 3, extra={"partition": 2, "offset": 41})
    log.warning("multi\nline message")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 3
    first = entries[0]
    assert first["message"] == "flushed 3 charges" and first["level"] == "INFO"
    assert first["logger"] == "streams.test" and first["app"] == "app-under-test"
    assert (first["partition"], first["offset"]) == (2, 41)
    assert first["ts"].endswith("+00:00")
    assert entries[1]["message"] == "multi\nline message"
    assert "RuntimeError: boom" in entries[2]["exc"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_masked_in_messages_and_tracebacks(fmt: str) -> None:
    log, out = configured(fmt)
    log.warning("connecting to postgresql://billing:%s@db.example/billing", DB_PW)
    log.error("sasl said no for password %s", SASL_PW)
    log.info("other url amqp://guest:guest-pw@mq/ stays masked too")
    try:
        raise ConnectionError(f"cannot reach postgresql://billing:{DB_PW}@db.example")
    except ConnectionError:
        log.exception("flush failed")
    text = out.getvalue()
    assert DB_PW not in text and SASL_PW not in text and "guest-pw" not in text
    assert "postgresql://billing:***@db.example" in text and "***" in text


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact_text("offset 12 of charges", ("secret-value",)) == "offset 12 of charges"
    assert redact_text("http://host:8080/path", ()) == "http://host:8080/path"
