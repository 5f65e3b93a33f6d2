"""`billing produce` refuses exactly what the worker refuses, for the same reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from streams.charge.decode import Limits, decode_record
from streams.cli.produce import parse_line
from streams.config.settings import Settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def line(**changes: object) -> bytes:
    body = {
        "event_id": "e-1",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "account_id": "acme",
        "user_id": "alice",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 10,
        "completion_tokens": 5,
    }
    return json.dumps(body | changes).encode()


def worker_verdict(raw: bytes) -> str | None:
    """The reason the worker gives for `raw` as a record of account acme (None: accepted)."""
    s = SETTINGS
    out = decode_record(raw, b"acme", Limits.for_record(NOW, s.max_clock_skew, s.zone))
    return out.rejections[0].reason if out.rejections else None


def producer_verdict(raw: bytes) -> str | None:
    try:
        parse_line(raw, SETTINGS, now=NOW)
    except ValueError as exc:
        return str(exc).split(":", 1)[0]
    return None


CASES = {
    "plain": line(),
    "bom": b"\xef\xbb\xbf" + line(),
    "unix seconds": line(occurred_at=int((NOW - timedelta(hours=1)).timestamp())),
    "unix as text": line(occurred_at=str(int((NOW - timedelta(hours=1)).timestamp()))),
    "old": line(occurred_at=(NOW - timedelta(days=60)).isoformat()),
    "future": line(occurred_at=(NOW + timedelta(hours=2)).isoformat()),
    "5000-digit profile id": line()[:-1] + b', "user_profile_id": ' + b"7" * 5000 + b"}",
    "4000-digit profile id": line()[:-1] + b', "user_profile_id": ' + b"7" * 4000 + b"}",
    "not utf-8": line()[:-1] + b', "model": "\xff"}',
}
EXPECTED = {
    "plain": None,
    "bom": None,
    "unix seconds": "bad_timestamp",
    "unix as text": "bad_timestamp",
    "old": None,  # old is not too late by itself: only a day closed long before says so
    "future": "future_timestamp",
    "5000-digit profile id": "number_too_long",
    "4000-digit profile id": None,
    "not utf-8": "invalid_json",
}


@pytest.mark.parametrize("case", list(CASES))
def test_producer_and_worker_agree(case: str) -> None:
    assert producer_verdict(CASES[case]) == worker_verdict(CASES[case]) == EXPECTED[case]


def test_a_duration_without_unit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_GRACE", "1")
    with pytest.raises(ValidationError, match="has no unit"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("BILLING_GRACE", "1h")
    assert Settings(_env_file=None).grace == timedelta(hours=1)  # type: ignore[call-arg]
