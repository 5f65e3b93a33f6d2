"""Dead-letter envelopes and configuration: round trips, durations, zones, secrets never shown."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from streams.charge.dead_letter import ENVELOPE_VERSION, DeadLetter, decode, encode, make_dead_letter
from streams.config.durations import parse_duration
from streams.config.settings import Settings

BINARY = bytes(range(256)) + b"\x00\xff\xfe{not json"
DB_PASSWORD = "pg-Pa55w0rd-5ecret"
SASL_PASSWORD = "sasl-hunter2-5ecret"
DB_URL = f"postgresql://billing:{DB_PASSWORD}@db.internal:5432/billing"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Settings read BILLING_* variables and ./.env: keep both out of these tests."""
    for name in list(os.environ):
        if name.upper().startswith("BILLING_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- DLQ envelope ------------------------------------------------------------------------------------


def letter(**overrides) -> DeadLetter:
    args = {
        "reason": "invalid_json",
        "detail": "Expecting value: line 1 column 1 (char 0)",
        "topic": "charges",
        "partition": 3,
        "offset": 12345,
        "index": None,
        "key": b"acct-1",
        "payload": BINARY,
        "now": datetime(2026, 5, 10, 12, 0, tzinfo=UTC),
    }
    args.update(overrides)
    return make_dead_letter(**args)


def test_dlq_round_trip_binary_payload():
    original = letter()
    raw = encode(original)
    back = decode(raw)
    assert back == original
    assert back.payload == BINARY
    assert back.key == "acct-1"
    assert back.rejected_at == "2026-05-10T12:00:00+00:00"


def test_dlq_envelope_is_readable_json():
    raw = encode(letter(index=7, reason="key_mismatch"))
    body = json.loads(raw)
    assert body["v"] == ENVELOPE_VERSION == 1
    assert body["reason"] == "key_mismatch"
    assert (body["topic"], body["partition"], body["offset"], body["index"]) == ("charges", 3, 12345, 7)
    assert base64.b64decode(body["payload"]) == BINARY
    raw.decode("ascii")  # base64 keeps the envelope plain text


@pytest.mark.parametrize("index", [None, 0, 499])
@pytest.mark.parametrize("key", [None, b"acct-1", "äccount-✓".encode()])
@pytest.mark.parametrize("payload", [b"", b"{}", BINARY, "é".encode() * 1000])
def test_dlq_round_trip_variants(index, key, payload):
    original = letter(index=index, key=key, payload=payload)
    back = decode(encode(original))
    assert back == original
    assert back.coordinates == ("charges", 3, 12345, index)
    assert back.key == (None if key is None else key.decode())


def test_dlq_undecodable_key_is_replaced_not_raised():
    dl = letter(key=b"\xffacct")
    assert dl.key == "\ufffdacct"
    assert decode(encode(dl)) == dl


def test_dlq_coordinates():
    assert letter(index=4).coordinates == ("charges", 3, 12345, 4)


def test_dlq_rejected_at_defaults_to_aware_now():
    before = datetime.now(UTC)
    dl = make_dead_letter(
        reason="r", detail="d", topic="t", partition=0, offset=0, index=None, key=None, payload=b"x"
    )
    at = datetime.fromisoformat(dl.rejected_at)
    assert at.tzinfo is not None
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)


# --- parse_duration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("500ms", timedelta(milliseconds=500)),
        ("2s", timedelta(seconds=2)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("35d", timedelta(days=35)),
        ("1w", timedelta(weeks=1)),
        ("0", timedelta(0)),
        ("1.5h", timedelta(minutes=90)),
        (" 10 s ", timedelta(seconds=10)),
        (90, timedelta(seconds=90)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "5 minutes",
        "5mm",
        "m5",
        "1e3",
        "-5s",
        "5x",
        "1h30m",
        "PT5M",
        None,
        [],
        "1,5h",
        "1",
        "90",
        "0.5",
    ],
)
def test_parse_duration_garbage(garbage):
    with pytest.raises(ValueError, match="not a duration") as exc:
        parse_duration(garbage)
    assert "500ms" in str(exc.value)  # the message says what would have worked


@pytest.mark.parametrize("huge", ["999999999999d", "99999999999999999999s"])
def test_parse_duration_out_of_range_is_a_clear_error(huge):
    with pytest.raises(ValueError):
        parse_duration(huge)


def test_settings_parse_durations_from_env(monkeypatch):
    monkeypatch.setenv("BILLING_GRACE", "90m")
    monkeypatch.setenv("BILLING_LATE_HORIZON", "10d")
    monkeypatch.setenv("BILLING_FLUSH_INTERVAL", "500ms")
    s = Settings(_env_file=None)
    assert s.grace == timedelta(minutes=90)
    assert s.late_horizon == timedelta(days=10)
    assert s.flush_interval == timedelta(milliseconds=500)


def test_settings_bad_duration_is_a_validation_error():
    with pytest.raises(ValidationError, match="not a duration"):
        Settings(_env_file=None, grace="soon")


def test_settings_defaults_match_the_design():
    s = Settings(_env_file=None)
    assert s.timezone == "UTC" and s.zone == ZoneInfo("UTC")
    assert s.grace == timedelta(hours=1)
    assert s.idle_timeout == timedelta(minutes=5)
    assert s.flush_interval == timedelta(seconds=2)
    assert s.late_horizon == timedelta(days=35)
    assert s.dedup_horizon == timedelta(days=7)
    assert s.max_clock_skew == timedelta(minutes=5)


# --- Settings: zone and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "EST5EDT6", "", "../etc/passwd", "utc/", "America/"])
def test_settings_rejects_unknown_timezone(zone):
    with pytest.raises(ValidationError, match="time zone"):
        Settings(_env_file=None, timezone=zone)


def test_settings_accepts_iana_zone():
    s = Settings(_env_file=None, timezone="America/New_York")
    assert s.zone == ZoneInfo("America/New_York")


def secret_settings() -> Settings:
    return Settings(
        _env_file=None,
        database_url=DB_URL,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="billing",
        kafka_sasl_password=SASL_PASSWORD,
    )


def test_settings_repr_and_str_hide_secrets():
    s = secret_settings()
    for text in (repr(s), str(s), f"{s}", repr(s.database_url), str(s.kafka_sasl_password)):
        assert DB_PASSWORD not in text
        assert SASL_PASSWORD not in text
    # the secrets are still there for the drivers
    assert s.dsn == DB_URL
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == SASL_PASSWORD


def test_settings_json_dump_hides_secrets():
    dumped = secret_settings().model_dump_json()
    assert DB_PASSWORD not in dumped
    assert SASL_PASSWORD not in dumped


def test_settings_secrets_from_env_hidden(monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", DB_URL)
    monkeypatch.setenv("BILLING_KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    s = Settings(_env_file=None)
    assert DB_PASSWORD not in repr(s) and SASL_PASSWORD not in repr(s)
    assert s.dsn == DB_URL


def test_settings_sasl_needs_a_mechanism():
    with pytest.raises(ValidationError, match="SASL_MECHANISM"):
        Settings(_env_file=None, kafka_security_protocol="SASL_SSL")


def test_settings_validation_error_hides_secrets():
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, kafka_security_protocol="SASL_SSL", kafka_sasl_password=SASL_PASSWORD)
    assert SASL_PASSWORD not in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, database_url=DB_URL, kafka_security_protocol="SASL_PLAINTEXT")
    assert DB_PASSWORD not in exc.value.json()
