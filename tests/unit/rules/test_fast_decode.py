"""The worker's fast path never disagrees with decode_record (pydantic, the schema of record).

`pending_rows` may decline any record (the worker then runs `decode_record`), but whatever it
accepts, `decode_record` must accept whole, with the same rows once batched. The inputs are
arbitrary bytes, arbitrary JSON, valid records and valid records with damage aimed at each rule
the fast path re-implements: identifiers, slugs, strict counts and their arithmetic, times in
every spelling pydantic reads, the carried-along fields, the key rule, the clock-skew and late
rules, in several zones. A second group of tests makes sure the fast path does accept what
producers send, so the property above is not met by declining everything.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.charge import MAX_REPORTED_NANOS, MAX_TOKENS
from streams.charge.decode import Limits, decode_record
from streams.charge.records import encode_charge
from streams.rules.batch import Batch
from streams.rules.fast_decode import pending_rows
from streams.testing.synthetic import synthetic_charges
from tests.unit.charge.test_decode_fuzz import (
    FUZZ,
    LIMITS,
    NOW,
    event_times,
    json_leaves,
    json_values,
    valid_charges,
)

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati"]
PARTITION, OFFSET = 3, 41


def limits_for(zone: str, horizon: bool, waive_future: bool) -> Limits:
    """The worker's limits (no late horizon) or a producer's (with one), in some zone."""
    waived = frozenset({"future_timestamp"}) if waive_future else frozenset()
    late = LIMITS.late_horizon if horizon else None
    return Limits(NOW, LIMITS.max_clock_skew, ZoneInfo(zone), late, waived)


def assert_agrees(value: bytes, key: bytes | None, limits: Limits, accept_late: bool = False) -> bool:
    """If the fast path takes the record, decode_record takes it whole with the same rows."""
    fast = pending_rows(value, key, limits, PARTITION, OFFSET, accept_late)
    if fast is None:
        return False
    rows, latest = fast
    decoded = decode_record(value, key, limits)
    assert decoded.rejections == [], "the fast path accepted what the model refuses"
    batch = Batch(limits.zone)
    batch.add_record(PARTITION, OFFSET, decoded.charges, decoded.positions, accept_late=accept_late)
    assert rows == batch.rows
    assert [type(v) for v in rows[0]] == [type(v) for v in batch.rows[0]]
    assert latest == batch.marks[PARTITION].max_event_time
    return True


# --- arbitrary input ---------------------------------------------------------------------------


@FUZZ
@given(value=st.binary(max_size=300), key=st.one_of(st.none(), st.binary(max_size=20)))
def test_arbitrary_bytes(value, key):
    assert_agrees(value, key, LIMITS)


@FUZZ
@given(doc=json_values, key=st.text(max_size=10))
def test_arbitrary_json(doc, key):
    assert_agrees(json.dumps(doc).encode(), key.encode(), LIMITS)


# --- valid charges, and valid charges damaged where the fast path has a rule of its own -------

times = st.one_of(
    # every spelling pydantic might read, valid or not: T/t/space, Z/z/offsets, 0-9 digits
    st.from_regex(
        r"\A\d{4}-[01]\d-[0-3]\d[Tt ][0-2]\d:[0-6]\d:[0-6]\d(\.\d{1,9})?([Zz]|[+-][0-2]\d:?[0-6]\d)?\Z"
    ),
    st.sampled_from(
        [
            "2026-05-10T11:00:00Z",
            "2026-05-10T12:04:59.999999Z",  # just inside the skew
            "2026-05-10T12:05:00.000001Z",  # just outside
            "2026-05-10T12:05:00Z",
            "2026-04-01T00:00:00Z",  # older than the late horizon
            "2026-02-29T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-01:00",
            "9999-12-31T23:59:59-23:59",
            "2026-05-10T11:00:00+24:00",
            "2026-05-10T11:00:00.5+05:45",
            "2026-05-10T24:00:00Z",
            "2026-05-10T11:00:60Z",
            "2026-05-10",
            "1778410800",
            "2026-05-10T11:00:00Z ",
        ]
    ),
)
identifiers = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["a", "A b", " a", "a ", "a\t", "a\x7f", "\x1fa", "é", "a" * 128, "a" * 129, "~!", ""]),
)
slugs = st.one_of(
    st.text(alphabet="aAzZ09_.:- \t", max_size=5),
    st.sampled_from(["openai", "OpenAI", " openai", "openai ", "\x1copenai", "a" * 64, "a" * 65, "-a", "é"]),
)
counts = st.one_of(
    st.integers(min_value=-2, max_value=40),
    st.sampled_from([MAX_TOKENS, MAX_TOKENS + 1, 2**63, 2**64, 2**70, True, False, 1.0, "1", None]),
)
notes = st.one_of(st.none(), st.text(max_size=4), st.sampled_from(["x" * 512, "x" * 513, 7, True, [], {}]))
DAMAGE: dict[str, st.SearchStrategy[Any]] = {
    "event_id": identifiers,
    "account_id": identifiers,
    "user_id": identifiers,
    "provider": slugs,
    "charge_type": slugs,
    "occurred_at": times,
    "prompt_tokens": counts,
    "completion_tokens": counts,
    "total_tokens": counts,
    "cached_tokens": counts,
    "cache_write_tokens": counts,
    "reasoning_tokens": counts,
    "reported_cost_nanos": st.one_of(
        counts, st.sampled_from([MAX_REPORTED_NANOS, MAX_REPORTED_NANOS + 1, -1, 0.5, "12"])
    ),
    "model": notes,
    "session_key": notes,
    "reference": notes,
    "user_profile_id": st.one_of(notes, st.integers(min_value=-(2**65), max_value=2**65)),
    "schema_version": counts,
    "prompt_token": json_leaves,  # unknown
}


ascii_identifiers = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8
).filter(lambda s: s.strip() == s)
edge_counts = st.integers(min_value=0, max_value=40)


@st.composite
def common_charges(draw: st.DrawFn, account_id: str, edge: bool | None = None) -> dict[str, Any]:
    """Charges in the form the fast path takes, half of them with one value at the edge of a
    rule (just inside or just outside), so that both sides of every rule are tried."""
    prompt, completion = draw(edge_counts), draw(edge_counts)
    body: dict[str, Any] = {
        "event_id": draw(ascii_identifiers),
        "occurred_at": draw(event_times)
        .isoformat()
        .replace("+00:00", draw(st.sampled_from(["Z", "+00:00"]))),
        "account_id": account_id,
        "user_id": draw(ascii_identifiers),
        "provider": draw(st.sampled_from(["openai", "anthropic", "a", "0.x:y-z_"])),
        "charge_type": draw(st.sampled_from(["completion", "tool"])),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }
    valid = {
        "total_tokens": prompt + completion,
        "cached_tokens": draw(st.sampled_from([0, prompt])),
        "cache_write_tokens": draw(st.sampled_from([0, prompt])),
        "reported_cost_nanos": draw(st.sampled_from([0, 1_234_567])),
        "reasoning_tokens": draw(st.sampled_from([0, completion])),
        "model": "gpt-4o",
        "session_key": "s",
        "reference": "r",
        "user_profile_id": draw(st.sampled_from([7, "p"])),
        "schema_version": 1,
    }
    for name in draw(st.lists(st.sampled_from(sorted(valid)), unique=True)):
        body[name] = valid[name]
    edges: dict[str, list[Any]] = {
        "total_tokens": [prompt + completion + 1, None, float(prompt + completion)],
        "cached_tokens": [prompt, prompt + 1, -1],
        "cache_write_tokens": [prompt, prompt + 1, -1, True],
        "reported_cost_nanos": [MAX_REPORTED_NANOS, MAX_REPORTED_NANOS + 1, -1, None, 1.0, True],
        "reasoning_tokens": [completion, completion + 1, -1],
        "prompt_tokens": [MAX_TOKENS, MAX_TOKENS + 1, -1, True],
        "model": ["x" * 512, "x" * 513, None, 1],
        "user_profile_id": ["p" * 128, "p" * 129, True, 2**64, None],
        "schema_version": [0, 2, True, None],
        "event_id": [" e", "e ", "e\x7f", "a" * 128, "a" * 129, "", "é"],
        "user_id": [" u", "u ", "\tu", "u" * 129, 7],
        "provider": ["OpenAI", " openai", "a" * 64, "a" * 65, "-x", "x!"],
        "occurred_at": [
            "2026-05-10T12:05:00Z",
            "2026-05-10T12:05:00.000001Z",
            "2026-04-01T00:00:00Z",
            "2026-05-10T11:00:00z",
        ],
    }
    if draw(st.booleans()) if edge is None else edge:
        name = draw(st.sampled_from(sorted(edges)))
        body[name] = draw(st.sampled_from(edges[name]))
    return body


@settings(FUZZ, max_examples=800)
@given(
    body=common_charges("acme", edge=True),
    zone=st.sampled_from(ZONES),
    horizon=st.booleans(),
    waive_future=st.booleans(),
)
def test_the_edges_of_the_fast_rules(body, zone, horizon, waive_future):
    assert_agrees(json.dumps(body).encode(), b"acme", limits_for(zone, horizon, waive_future))


@st.composite
def damaged_charge(draw: st.DrawFn, account_id: str) -> Any:
    body = draw(st.one_of(valid_charges(account_id), common_charges(account_id)))
    for name in draw(st.lists(st.sampled_from(sorted(DAMAGE)), max_size=2, unique=True)):
        if name in body and draw(st.booleans()):
            del body[name]
        else:
            body[name] = draw(DAMAGE[name])
    return body


@FUZZ
@given(
    data=st.data(),
    account_id=st.one_of(st.sampled_from(["acme", "acct-1", "A b", "é"]), ascii_identifiers, identifiers),
    zone=st.sampled_from(ZONES),
    horizon=st.booleans(),
    waive_future=st.booleans(),
    accept_late=st.booleans(),
    single=st.booleans(),
    ascii_only=st.booleans(),
)
def test_damaged_records(data, account_id, zone, horizon, waive_future, accept_late, single, ascii_only):
    elements = data.draw(
        st.lists(
            st.one_of(valid_charges(account_id), common_charges(account_id), damaged_charge(account_id)),
            min_size=1,
            max_size=4,
        )
    )
    value = json.dumps(elements[0] if single else elements, ensure_ascii=ascii_only).encode()
    key = data.draw(st.sampled_from([account_id, account_id.upper(), "other"])).encode()
    assert_agrees(value, key, limits_for(zone, horizon, waive_future), accept_late)


@FUZZ
@given(body=common_charges("acme"), when=times, zone=st.sampled_from(ZONES), horizon=st.booleans())
def test_every_spelling_of_a_time(body, when, zone, horizon):
    body = {**body, "account_id": "acme", "event_id": "e", "user_id": "u"}
    body["occurred_at"] = when
    assert_agrees(json.dumps(body).encode(), b"acme", limits_for(zone, horizon, False))


def test_a_key_given_twice_counts_its_last_value_on_both_paths():
    body = json.dumps({"event_id": "e1", "occurred_at": "2026-05-10T11:00:00Z", "account_id": "acme"})
    rest = '"user_id":"u","provider":"openai","charge_type":"completion","completion_tokens":2'
    for counts_ in ('"prompt_tokens":1,"prompt_tokens":3', '"prompt_tokens":"x","prompt_tokens":3'):
        value = (body[:-1] + f",{rest},{counts_}}}").encode()
        assert assert_agrees(value, b"acme", LIMITS)
        rows, _ = pending_rows(value, b"acme", LIMITS, PARTITION, OFFSET) or ([], None)
        assert rows[0].prompt_tokens == 3


# --- what producers send takes the fast path --------------------------------------------------


def _producer_records(n: int) -> list[tuple[bytes, bytes]]:
    now = NOW - timedelta(minutes=1)
    out = []
    for charge in synthetic_charges(n, days=3, accounts=5, seed=7, now=now):
        out.append((charge.account_id.encode(), encode_charge(charge)))
    return out


def test_what_producers_send_takes_the_fast_path():
    records = _producer_records(300)
    singles = [assert_agrees(value, key, LIMITS) for key, value in records]
    batch = b"[" + b",".join(value for key, value in records if key == records[0][0]) + b"]"
    assert all(singles)
    assert assert_agrees(batch, records[0][0], LIMITS)


def test_a_bad_charge_anywhere_sends_the_record_the_long_way():
    key, value = _producer_records(1)[0]
    good = json.loads(value)
    for bad in ({**good, "prompt_tokens": -1}, {**good, "provider": "OpenAI"}, {**good, "extra": 1}):
        assert pending_rows(json.dumps([good, bad]).encode(), key, LIMITS, 0, 0) is None
    assert pending_rows(value, b"someone-else", LIMITS, 0, 0) is None
    assert pending_rows(value, None, LIMITS, 0, 0) is None
