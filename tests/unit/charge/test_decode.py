"""decode_record: bytes -> charges + one rejection per bad part, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.charge import Charge
from streams.charge.decode import MAX_CHARGE_BYTES, Decoded, Limits, decode_record

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    now=NOW, max_clock_skew=timedelta(minutes=5), zone=ZoneInfo("UTC"), late_horizon=timedelta(days=35)
)
KEY = b"acct-1"
SECRET = "sk-live-7f3a9c1e5b2d4f60"


def charge(n: int = 1, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "occurred_at": "2026-05-10T11:00:00Z",
        "account_id": "acct-1",
        "user_id": "user-1",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 10 * n,
        "completion_tokens": 20 * n,
    }
    base.update(overrides)
    return base


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode(value: bytes | None, key: bytes | None = KEY, limits: Limits = LIMITS) -> Decoded:
    return decode_record(value, key, limits)


def only_rejection(out: Decoded):
    assert out.charges == []
    assert len(out.rejections) == 1, out.rejections
    return out.rejections[0]


# --- happy paths -------------------------------------------------------------------------------


def test_single_object_ok():
    out = decode(enc(charge()))
    assert out.rejections == []
    assert out.charges == [Charge.model_validate(charge())]
    assert out.charges[0].total_tokens == 30


def test_batch_ok_keeps_order():
    elements = [charge(i) for i in range(1, 6)]
    out = decode(enc(elements))
    assert out.rejections == []
    assert [c.event_id for c in out.charges] == [f"evt-{i}" for i in range(1, 6)]
    assert out.charges == [Charge.model_validate(e) for e in elements]


def test_single_element_batch_ok():
    out = decode(enc([charge()]))
    assert out.rejections == [] and len(out.charges) == 1


# --- whole-record rejections -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [b"{", b"", None, b"not json", b'{"a":1,}', b"\x80abc", b"{'a': 1}", b"NaN]"]
)
def test_invalid_json(value):
    r = only_rejection(decode(value))
    assert r.reason == "invalid_json"
    assert r.index is None
    assert r.payload == (value or b"")


@pytest.mark.parametrize("value", [b"42", b"[]", b'"x"', b"null", b"true", b"1.5", b"  []  "])
def test_not_an_object(value):
    r = only_rejection(decode(value))
    assert r.reason == "not_an_object"
    assert r.index is None
    assert r.payload == value


def test_missing_key():
    value = enc(charge())
    r = only_rejection(decode(value, key=None))
    assert r.reason == "missing_key"
    assert r.index is None
    assert r.payload == value


def test_missing_key_and_no_value():
    r = only_rejection(decode(None, key=None))
    assert r.reason == "missing_key"
    assert r.payload == b""


def test_undecodable_key_is_invalid_key():
    value = enc(charge())
    r = only_rejection(decode(value, key=b"\xffacct"))
    assert r.reason == "invalid_key"
    assert r.payload == value


def test_undecodable_key_never_accepted():
    out = decode(enc(charge()), key=b"\xffacct")
    assert out.charges == [] and len(out.rejections) == 1 and out.rejections[0].index is None


# --- per-charge reasons (single object: index None, payload = the original bytes) ---------------


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"account_id": "acct-2"}, "key_mismatch"),
        ({"total_tokens": 31}, "total_mismatch"),
        ({"prompt_tokens": -1}, "negative_count"),
        ({"completion_tokens": -5}, "negative_count"),
        ({"occurred_at": "2026-05-10T11:00:00"}, "naive_timestamp"),
        ({"occurred_at": "not a time"}, "bad_timestamp"),
        ({"occurred_at": "2026-02-30T11:00:00Z"}, "bad_timestamp"),
        ({"prompt_token": 10}, "unknown_field"),
        ({"prompt_tokens": 10.0}, "wrong_type"),
        ({"prompt_tokens": "10"}, "wrong_type"),
        ({"prompt_tokens": True}, "wrong_type"),
        ({"prompt_tokens": 1.5}, "wrong_type"),
        ({"provider": "open ai"}, "bad_slug"),
        ({"cached_tokens": 11}, "token_parts_exceed"),
        ({"reasoning_tokens": 21}, "token_parts_exceed"),
        ({"user_id": ""}, "empty_field"),
        ({"user_id": "u" * 129}, "field_too_long"),
        ({"prompt_tokens": 10**12 + 1}, "count_too_large"),
    ],
)
def test_single_rejection_reason(overrides, reason):
    value = enc(charge(**overrides))
    r = only_rejection(decode(value))
    assert r.reason == reason
    assert r.index is None
    assert r.payload == value
    assert r.detail


def test_missing_field():
    body = charge()
    del body["user_id"]
    r = only_rejection(decode(enc(body)))
    assert r.reason == "missing_field"
    assert "user_id" in r.detail


def test_unknown_field_detail_names_field():
    r = only_rejection(decode(enc(charge(prompt_token=10))))
    assert "prompt_token" in r.detail


# --- clock skew and the late horizon -----------------------------------------------------------


def at(instant: datetime) -> bytes:
    return enc(charge(occurred_at=instant.isoformat()))


@pytest.mark.parametrize(
    "ahead",
    [
        timedelta(minutes=5, seconds=1),
        timedelta(minutes=5, microseconds=1),
        timedelta(hours=2),
        timedelta(days=400),
    ],
)
def test_future_timestamp_rejected(ahead):
    r = only_rejection(decode(at(NOW + ahead)))
    assert r.reason == "future_timestamp"


@pytest.mark.parametrize("ahead", [timedelta(0), timedelta(minutes=4, seconds=59), timedelta(minutes=5)])
def test_within_skew_accepted(ahead):
    out = decode(at(NOW + ahead))
    assert out.rejections == [] and len(out.charges) == 1


def test_future_check_uses_instant_not_wall_text():
    # 17:04 at +05:30 is 11:34 UTC: in the past although the local wall clock reads later than NOW.
    out = decode(enc(charge(occurred_at="2026-05-10T17:04:00+05:30")))
    assert out.rejections == [] and len(out.charges) == 1
    # 07:06 at -05:00 is 12:06 UTC: one minute over the skew.
    r = only_rejection(decode(enc(charge(occurred_at="2026-05-10T07:06:00-05:00"))))
    assert r.reason == "future_timestamp"


def test_oldest_date():
    assert LIMITS.oldest_date == date(2026, 4, 5)


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 4, 4, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
    ],
)
def test_too_late_rejected(instant):
    r = only_rejection(decode(at(instant)))
    assert r.reason == "too_late"


@pytest.mark.parametrize(
    "instant",
    [datetime(2026, 4, 5, 0, 0, tzinfo=UTC), datetime(2026, 4, 20, tzinfo=UTC), NOW - timedelta(days=1)],
)
def test_inside_late_horizon_accepted(instant):
    out = decode(at(instant))
    assert out.rejections == [] and len(out.charges) == 1


def test_too_late_follows_billing_zone():
    ny = Limits(NOW, timedelta(minutes=5), ZoneInfo("America/New_York"), timedelta(days=35))
    assert ny.oldest_date == date(2026, 4, 5)  # NOW - 35 d = 2026-04-05T12:00Z = 08:00 EDT
    # 2026-04-05T03:00Z is 2026-04-04 23:00 in New York: billed on the 4th -> too late there only.
    value = enc(charge(occurred_at="2026-04-05T03:00:00Z"))
    assert only_rejection(decode(value, limits=ny)).reason == "too_late"
    assert len(decode(value).charges) == 1


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "0001-01-01T05:00:00+06:00"])
def test_extreme_past_timestamp_rejected_not_raised(when):
    r = only_rejection(decode(enc(charge(occurred_at=when))))
    assert r.reason in {"too_late", "bad_timestamp"}


def test_extreme_future_timestamp_rejected():
    r = only_rejection(decode(enc(charge(occurred_at="9999-12-31T23:59:59-14:00"))))
    assert r.reason == "future_timestamp"


# --- size limit ----------------------------------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with insignificant whitespace to exactly `size` bytes."""
    raw = enc(body)
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_single_object_at_limit_accepted():
    value = padded(charge(), MAX_CHARGE_BYTES)
    assert len(value) == 64 * 1024
    out = decode(value)
    assert out.rejections == [] and len(out.charges) == 1


def test_single_object_over_limit_too_large():
    value = padded(charge(), MAX_CHARGE_BYTES + 1)
    r = only_rejection(decode(value))
    assert r.reason == "too_large"
    assert r.index is None
    assert r.payload == value


def test_single_object_with_huge_field_too_large():
    value = enc(charge(reference="r" * 70_000))
    assert only_rejection(decode(value)).reason == "too_large"


def test_batch_element_over_limit_too_large():
    big = charge(2, reference="r" * 70_000)
    elements = [charge(1), big, charge(3)]
    out = decode(enc(elements))
    assert [c.event_id for c in out.charges] == ["evt-1", "evt-3"]
    assert len(out.rejections) == 1
    r = out.rejections[0]
    assert (r.reason, r.index) == ("too_large", 1)
    assert json.loads(r.payload) == big


def test_single_element_batch_over_limit_too_large():
    big = charge(1, event_id=" " * 70_000 + "evt-1")  # valid once stripped, but 70 KB on the wire
    r = only_rejection(decode(enc([big])))
    assert (r.reason, r.index) == ("too_large", 0)


def test_batch_valid_but_oversized_element_too_large():
    big = charge(1, event_id=" " * 70_000 + "evt-1")
    single = decode(enc(big))
    assert only_rejection(single).reason == "too_large"
    out = decode(enc([big, charge(2)]))
    assert [c.event_id for c in out.charges] == ["evt-2"]
    assert [(r.reason, r.index) for r in out.rejections] == [("too_large", 0)]


# --- batches with bad elements -------------------------------------------------------------------


def test_positions_name_the_accepted_elements():
    single = decode(enc(charge()))
    assert single.positions == [0]
    elements = [charge(1), charge(2, prompt_tokens=-1), charge(3), 7, charge(5)]
    out = decode(enc(elements))
    assert [c.event_id for c in out.charges] == ["evt-1", "evt-3", "evt-5"]
    assert out.positions == [0, 2, 4]
    assert decode(enc([charge(1)] * 3)).positions == [0, 1, 2]  # duplicates stay distinct


def test_batch_key_mismatch_keeps_good_elements():
    bad = charge(2, account_id="acct-2")
    elements = [charge(1), bad, charge(3)]
    out = decode(enc(elements))
    assert [c.event_id for c in out.charges] == ["evt-1", "evt-3"]
    assert len(out.rejections) == 1
    r = out.rejections[0]
    assert (r.reason, r.index) == ("key_mismatch", 1)
    assert json.loads(r.payload) == bad


def test_batch_with_many_kinds_of_bad_elements():
    elements: list[Any] = [
        charge(0),
        charge(1, total_tokens=1),
        42,
        charge(3, prompt_tokens=-3),
        "x",
        charge(5, occurred_at="2026-05-10T11:00:00"),
        charge(6),
        [],
        charge(8, occurred_at="garbage"),
        charge(9, occurred_at=(NOW + timedelta(hours=1)).isoformat()),
        charge(10, occurred_at="2026-01-01T00:00:00Z"),
        charge(11, surprise=True),
        None,
        charge(13),
    ]
    out = decode(enc(elements))
    assert [c.event_id for c in out.charges] == ["evt-0", "evt-6", "evt-13"]
    got = {r.index: r.reason for r in out.rejections}
    assert got == {
        1: "total_mismatch",
        2: "not_an_object",
        3: "negative_count",
        4: "not_an_object",
        5: "naive_timestamp",
        7: "not_an_object",
        8: "bad_timestamp",
        9: "future_timestamp",
        10: "too_late",
        11: "unknown_field",
        12: "not_an_object",
    }
    assert len(out.rejections) == len(got)
    assert len(out.charges) + len(out.rejections) == len(elements)
    for r in out.rejections:
        assert json.loads(r.payload) == elements[r.index]
        assert r.detail


def test_batch_rule_failures_after_fast_path_have_index_and_element_payload():
    # Every element passes pydantic, so the whole-batch fast path runs; the rules then split it.
    late = charge(2, occurred_at="2026-03-01T00:00:00Z")
    elements = [charge(1), late, charge(3, account_id="acct-9")]
    out = decode(enc(elements))
    assert [c.event_id for c in out.charges] == ["evt-1"]
    assert [(r.reason, r.index) for r in out.rejections] == [("too_late", 1), ("key_mismatch", 2)]
    assert json.loads(out.rejections[0].payload) == late
    assert json.loads(out.rejections[1].payload) == elements[2]


def test_batch_all_bad():
    elements = [charge(i, prompt_tokens=-1) for i in range(4)]
    out = decode(enc(elements))
    assert out.charges == []
    assert [(r.reason, r.index) for r in out.rejections] == [("negative_count", i) for i in range(4)]


def test_batch_element_payload_keeps_non_ascii():
    bad = charge(1, reference="café ✓ 𝄞", total_tokens=0)
    out = decode(json.dumps([bad, charge(2)], ensure_ascii=False).encode())
    assert len(out.charges) == 1
    assert json.loads(out.rejections[0].payload.decode("utf-8")) == bad


# --- detail strings never echo input values ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        charge(reference=SECRET + "x" * 600),
        charge(model=SECRET * 40),
        charge(prompt_tokens=SECRET),
        charge(provider=SECRET.upper() + " !"),
        charge(charge_type=[SECRET]),
        charge(occurred_at=SECRET),
        charge(occurred_at=f"2026-05-10T11:00:00 {SECRET}"),
        charge(user_profile_id=[SECRET]),
        charge(event_id=SECRET * 10),
        charge(user_id={"token": SECRET}),
        charge(api_key=SECRET),
        charge(reference=SECRET, prompt_tokens=-1),
        charge(reference=SECRET, occurred_at="2026-05-10T11:00:00"),
        charge(reference=SECRET, occurred_at="2026-05-11T11:00:00Z"),
        charge(reference=SECRET, occurred_at="2026-01-01T11:00:00Z"),
        charge(reference=SECRET, total_tokens=1),
        charge(reference=SECRET, cached_tokens=100),
    ],
)
@pytest.mark.parametrize("as_batch", [False, True])
def test_detail_never_contains_secret(body, as_batch):
    value = enc([charge(0), body] if as_batch else body)
    out = decode(value)
    assert len(out.rejections) == 1
    r = out.rejections[0]
    assert SECRET not in r.detail
    assert SECRET.upper() not in r.detail
    assert SECRET in r.payload.decode().lower()  # the DLQ still has the original input


@pytest.mark.parametrize("value", [f'{{"reference": {SECRET}}}'.encode(), f'["{SECRET}"'.encode()])
def test_invalid_json_detail_never_contains_secret(value):
    r = only_rejection(decode(value))
    assert r.reason == "invalid_json"
    assert SECRET not in r.detail


def test_key_mismatch_detail_does_not_echo_account():
    r = only_rejection(decode(enc(charge(account_id=SECRET))))
    assert r.reason == "key_mismatch"
    assert SECRET not in r.detail


def test_total_mismatch_detail_does_not_echo_value():
    r = only_rejection(decode(enc(charge(total_tokens=987654321))))
    assert r.reason == "total_mismatch"
    assert "987654321" not in r.detail


# --- never raises ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000]
)
def test_deeply_nested_json_rejected_not_raised(value):
    r = only_rejection(decode(value))
    assert r.index is None
    assert r.reason in {"invalid_json", "not_an_object", "too_large"}


def test_moderately_nested_batch_element_rejected():
    nested: Any = 1
    for _ in range(200):
        nested = [nested]
    out = decode(enc([charge(1), nested]))
    assert len(out.charges) == 1
    assert [(r.reason, r.index) for r in out.rejections] == [("not_an_object", 1)]


def test_huge_integer_literal_rejected():
    value = b'{"prompt_tokens": ' + b"9" * 5000 + b"}"
    r = only_rejection(decode(value))
    assert r.reason == "number_too_long"  # valid JSON, but longer than any count or id can be
