"""Property tests for decode_record: never raises, never drops anything silently, valid in = valid out.

Known crashes (RecursionError on deeply nested JSON, OverflowError near datetime.min) are pinned by
strict xfails in test_decode.py; the strategies here stay clear of them so that these properties
keep guarding everything else.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.charge import MAX_REPORTED_NANOS, MAX_TOKENS, SLUG_PATTERN, Charge
from streams.charge.decode import Decoded, Limits, decode_record

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    now=NOW, max_clock_skew=timedelta(minutes=5), zone=ZoneInfo("UTC"), late_horizon=timedelta(days=35)
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that also holds for NaN (which never equals itself)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check_accounting(value: bytes | None, out: Decoded) -> None:
    """Every input yields >= 1 charge or >= 1 rejection, and a batch accounts for every element."""
    assert out.charges or out.rejections, "input silently dropped"
    for r in out.rejections:
        assert isinstance(r.reason, str) and r.reason
        assert isinstance(r.detail, str)
        assert isinstance(r.payload, bytes)
    for c in out.charges:
        assert isinstance(c, Charge)
    assert len(out.positions) == len(out.charges)
    whole = [r for r in out.rejections if r.index is None]
    if whole:
        # one whole-record rejection (a bad record or a bad single object) and nothing else
        assert len(out.rejections) == 1 and out.charges == []
        return
    parsed = json.loads(value or b"")
    if isinstance(parsed, dict):
        assert len(out.charges) == 1 and out.rejections == []
        assert out.positions == [0]
        return
    assert isinstance(parsed, list) and parsed
    n = len(parsed)
    indexes = [r.index for r in out.rejections]
    assert len(set(indexes)) == len(indexes), "an element rejected twice"
    assert all(isinstance(i, int) and 0 <= i < n for i in indexes)
    assert len(out.charges) + len(out.rejections) == n
    # each accepted charge names its element: positions are the indexes nobody rejected, in order
    assert out.positions == [i for i in range(n) if i not in set(indexes)]
    for r in out.rejections:
        assert r.index is not None
        assert same_json(json.loads(r.payload), parsed[r.index])


# --- arbitrary bytes -------------------------------------------------------------------------------


@FUZZ
@given(value=st.one_of(st.none(), st.binary(max_size=300)), key=st.one_of(st.none(), st.binary(max_size=40)))
def test_arbitrary_bytes_never_raise(value, key):
    out = decode_record(value, key, LIMITS)
    check_accounting(value, out)
    if key is None:
        assert out.rejections[0].reason == "missing_key"


# --- arbitrary JSON --------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


@FUZZ
@given(doc=json_values, key=st.text(max_size=20))
def test_arbitrary_json_never_raises(doc, key):
    value = json.dumps(doc).encode()
    out = decode_record(value, key.encode(), LIMITS)
    check_accounting(value, out)
    if not isinstance(doc, dict | list) or doc == []:
        assert [r.reason for r in out.rejections] == ["not_an_object"]


# --- valid charges ---------------------------------------------------------------------------------


CONTROL = "".join(map(chr, [*range(0x20), 0x7F]))
_identifier_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROL)


def stripped_text(max_size: int) -> st.SearchStrategy[str]:
    """A valid identifier: no surrounding space, no control character."""
    return st.text(_identifier_chars, min_size=1, max_size=max_size).map(str.strip).filter(bool)


_SLUG_HEAD = "abcdefghijklmnopqrstuvwxyz0123456789"
slugs = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(_SLUG_HEAD),
    st.text(alphabet=_SLUG_HEAD + "_.:-", max_size=63),
)
offsets = st.integers(min_value=-14 * 4, max_value=14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
# from 34 days back (inside the 35-day horizon whatever the zone) to exactly the 5-minute skew ahead
event_times = st.builds(
    lambda us, tz: (NOW + timedelta(microseconds=us)).astimezone(tz),
    st.integers(min_value=-34 * 86_400 * 10**6, max_value=5 * 60 * 10**6),
    offsets,
)


@st.composite
def valid_charges(draw: st.DrawFn, account_id: str) -> dict[str, Any]:
    prompt = draw(st.integers(min_value=0, max_value=MAX_TOKENS))
    completion = draw(st.integers(min_value=0, max_value=MAX_TOKENS - prompt))
    body: dict[str, Any] = {
        "event_id": draw(stripped_text(128)),
        "occurred_at": draw(event_times).isoformat(),
        "account_id": account_id,
        "user_id": draw(stripped_text(128)),
        "provider": draw(slugs),
        "charge_type": draw(slugs),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }
    if draw(st.booleans()):
        body["total_tokens"] = prompt + completion
    cached = 0
    if draw(st.booleans()):
        cached = body["cached_tokens"] = draw(st.integers(min_value=0, max_value=prompt))
    if draw(st.booleans()):
        body["cache_write_tokens"] = draw(st.integers(min_value=0, max_value=prompt - cached))
    if draw(st.booleans()):
        body["reported_cost_nanos"] = draw(st.integers(min_value=0, max_value=MAX_REPORTED_NANOS))
    if draw(st.booleans()):
        body["reasoning_tokens"] = draw(st.integers(min_value=0, max_value=completion))
    for name in ("model", "session_key", "reference"):
        if draw(st.booleans()):
            body[name] = draw(st.text(max_size=512))
    if draw(st.booleans()):
        body["user_profile_id"] = draw(st.one_of(st.integers(), st.text(max_size=128)))
    if draw(st.booleans()):
        body["schema_version"] = 1
    return body


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], bool]:
    account_id = draw(stripped_text(128))
    elements = draw(st.lists(valid_charges(account_id), min_size=1, max_size=4))
    single = len(elements) == 1 and draw(st.booleans())
    return account_id, elements, single


def test_slug_strategy_matches_the_model_pattern():
    pattern = re.compile(SLUG_PATTERN)

    @settings(max_examples=100, deadline=None)
    @given(slugs)
    def check(slug):
        assert pattern.fullmatch(slug)

    check()


def assert_matches(charge: Charge, body: dict[str, Any]) -> None:
    for name, sent in body.items():
        got = getattr(charge, name)
        if name == "occurred_at":
            sent_dt = datetime.fromisoformat(sent)
            assert got == sent_dt and got.utcoffset() == sent_dt.utcoffset()
        else:
            assert got == sent and type(got) is type(sent), name
    assert charge.total_tokens == body["prompt_tokens"] + body["completion_tokens"]
    assert charge.cached_tokens == body.get("cached_tokens", 0)
    assert charge.reasoning_tokens == body.get("reasoning_tokens", 0)
    assert charge.schema_version == 1


@FUZZ
@given(
    record=valid_records(),
    ascii_only=st.booleans(),
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati"]),
)
def test_valid_charges_decode_to_equal_charges(record, ascii_only, zone):
    account_id, elements, single = record
    limits = Limits(NOW, LIMITS.max_clock_skew, ZoneInfo(zone), LIMITS.late_horizon)
    value = json.dumps(elements[0] if single else elements, ensure_ascii=ascii_only).encode()
    out = decode_record(value, account_id.encode(), limits)
    assert out.rejections == []
    assert len(out.charges) == len(elements)
    for charge, body in zip(out.charges, elements, strict=True):
        assert_matches(charge, body)
        assert charge == Charge.model_validate(body)
        assert Charge.model_validate(charge.to_wire()) == charge


# --- valid charges with random damage: the good ones still come through unchanged -----------------

damage = st.one_of(
    json_leaves,
    st.lists(json_leaves, max_size=3),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from(
        [
            "2026-05-10T11:00:00",
            "2026-05-10T11:00:00Z",
            "2026-05-11T11:00:00Z",
            "2026-01-01T00:00:00Z",
            "1900-01-01T00:00:00+05:00",
            "OpenAI",
            "",
            " ",
        ]
    ),
)
FIELDS = [
    "event_id",
    "occurred_at",
    "account_id",
    "user_id",
    "provider",
    "charge_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "model",
    "user_profile_id",
    "schema_version",
    "prompt_token",
]


@st.composite
def damaged(draw: st.DrawFn, account_id: str) -> Any:
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_leaves)  # not an object at all
    body = draw(valid_charges(account_id))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()) and name in body:
            del body[name]
        else:
            body[name] = draw(damage)
    return body


@FUZZ
@given(data=st.data())
def test_damaged_batches_account_for_every_element(data):
    account_id = data.draw(stripped_text(40))
    elements = data.draw(
        st.lists(st.one_of(valid_charges(account_id), damaged(account_id)), min_size=1, max_size=6)
    )
    value = json.dumps(elements).encode()
    out = decode_record(value, account_id.encode(), LIMITS)
    check_accounting(value, out)
    rejected = {r.index for r in out.rejections}
    kept = [e for i, e in enumerate(elements) if i not in rejected]
    assert out.charges == [Charge.model_validate(e) for e in kept]


@FUZZ
@given(
    field=st.sampled_from(["event_id", "account_id", "user_id"]),
    head=stripped_text(20),
    control=st.sampled_from(CONTROL),
    tail=stripped_text(20),
)
def test_a_control_character_in_an_identifier_is_refused_with_its_own_reason(field, head, control, tail):
    body = {
        "event_id": "e1",
        "occurred_at": NOW.isoformat(),
        "account_id": "acme",
        "user_id": "u",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    body[field] = head + control + tail
    out = decode_record(json.dumps(body).encode(), body["account_id"].encode(), LIMITS)
    assert [r.reason for r in out.rejections] == ["control_character"] and out.charges == []
    assert (head + control + tail) not in out.rejections[0].detail  # the value is never echoed
