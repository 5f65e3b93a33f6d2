"""The Charge model: strict counts, aware times, token arithmetic, slugs, round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.charge import SCHEMA_VERSION, Charge

_DROP = object()  # marks a field to leave out


def wire(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "7d7f6a3e-0b2f-4c55-9b8a-5d1f7c0a9e11",
        "occurred_at": "2026-05-10T11:00:00Z",
        "account_id": "acct-1",
        "user_id": "user-1",
        "provider": "openai",
        "charge_type": "completion",
        "prompt_tokens": 10,
        "completion_tokens": 20,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {e["type"] for e in exc.value.errors()}


def test_valid_charge_fields():
    c = Charge.model_validate(
        wire(total_tokens=30, cached_tokens=4, reasoning_tokens=5, model="gpt-x", reference="r-1")
    )
    assert c.occurred_at == datetime(2026, 5, 10, 11, 0, tzinfo=UTC)
    assert c.occurred_at.tzinfo is not None
    assert (c.prompt_tokens, c.completion_tokens, c.total_tokens) == (10, 20, 30)
    assert (c.cached_tokens, c.reasoning_tokens) == (4, 5)
    assert c.total == 30
    assert c.model == "gpt-x"
    assert c.reference == "r-1"
    assert c.schema_version == SCHEMA_VERSION == 1


def test_defaults():
    c = Charge.model_validate(wire())
    assert c.cached_tokens == 0
    assert c.reasoning_tokens == 0
    assert c.model is None and c.session_key is None and c.reference is None
    assert c.user_profile_id is None


def test_total_tokens_derived_when_absent():
    c = Charge.model_validate(wire(prompt_tokens=7, completion_tokens=11))
    assert c.total_tokens == 18
    assert c.total == 18


def test_total_tokens_null_is_derived():
    c = Charge.model_validate(wire(prompt_tokens=7, completion_tokens=11, total_tokens=None))
    assert c.total_tokens == 18


@pytest.mark.parametrize("total", [0, 29, 31, 10, 20])
def test_mismatching_total_rejected(total):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(total_tokens=total))
    assert "total_tokens" in str(exc.value)


@pytest.mark.parametrize(
    "field", ["prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"]
)
def test_negative_counts_rejected(field):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(**{field: -1}))
    assert "greater_than_equal" in error_types(exc)


@pytest.mark.parametrize("bad", [10.0, 1.5, "10", "1_0", " 10", True, False, None, [10], {"n": 10}])
@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens"])
def test_non_integer_counts_rejected(field, bad):
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(**{field: bad}))


@pytest.mark.parametrize("bad", [10.0, 30.0, "30", True])
def test_non_integer_total_rejected(bad):
    # 30.0 would even match prompt+completion: it must still be refused, not coerced.
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(total_tokens=bad))


@pytest.mark.parametrize("bad", [1.0, "1", True])
@pytest.mark.parametrize("field", ["cached_tokens", "reasoning_tokens"])
def test_non_integer_parts_rejected(field, bad):
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(**{field: bad}))


def test_count_upper_bound():
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(prompt_tokens=10**12 + 1))
    assert "less_than_equal" in error_types(exc)


@pytest.mark.parametrize("naive", ["2026-05-10T11:00:00", "2026-05-10 11:00:00", "2026-05-10"])
def test_naive_timestamp_string_rejected(naive):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(occurred_at=naive))
    assert error_types(exc) == {"timezone_aware"}


def test_naive_datetime_object_rejected():
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(occurred_at=datetime(2026, 5, 10, 11, 0)))
    assert "naive" in str(exc.value)


def test_aware_datetime_object_and_offsets_accepted():
    kolkata = timezone(timedelta(hours=5, minutes=30))
    c = Charge.model_validate(wire(occurred_at=datetime(2026, 5, 10, 16, 30, tzinfo=kolkata)))
    assert c.occurred_at == datetime(2026, 5, 10, 11, 0, tzinfo=UTC)
    c2 = Charge.model_validate(wire(occurred_at="2026-05-10T06:00:00-05:00"))
    assert c2.occurred_at == datetime(2026, 5, 10, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    ["yesterday", "", "2026-13-01T00:00:00Z", "2026-05-10T25:00:00Z", "10/05/2026 11:00 +00:00", [], {}],
)
def test_unparsable_time_rejected(bad):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(occurred_at=bad))
    assert all(e["loc"][0] == "occurred_at" for e in exc.value.errors())


@pytest.mark.parametrize("extra", ["prompt_token", "tokens", "cost", "Provider"])
def test_unknown_field_rejected(extra):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(**{extra: 1}))
    assert "extra_forbidden" in error_types(exc)


@pytest.mark.parametrize(
    "field",
    [
        "event_id",
        "occurred_at",
        "account_id",
        "user_id",
        "provider",
        "charge_type",
        "prompt_tokens",
        "completion_tokens",
    ],
)
def test_required_fields(field):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(**{field: _DROP}))
    assert "missing" in error_types(exc)


@pytest.mark.parametrize("field", ["account_id", "user_id", "event_id"])
@pytest.mark.parametrize("bad", ["", "   ", "x" * 129])
def test_identifier_lengths(field, bad):
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(**{field: bad}))


def test_identifier_max_length_ok():
    assert Charge.model_validate(wire(account_id="a" * 128)).account_id == "a" * 128


@pytest.mark.parametrize("field", ["provider", "charge_type"])
def test_slug_whitespace_stripped(field):
    assert getattr(Charge.model_validate(wire(**{field: "  tool  "})), field) == "tool"


@pytest.mark.parametrize(
    "field,value,expected", [("provider", "OpenAI", "openai"), ("charge_type", "Completion", "completion")]
)
def test_slug_lower_cased(field, value, expected):
    assert getattr(Charge.model_validate(wire(**{field: value})), field) == expected


@pytest.mark.parametrize("field", ["provider", "charge_type"])
@pytest.mark.parametrize("bad", ["", "open ai", "-openai", "_x", "open/ai", "opén", "a" * 65, "x;drop"])
def test_slug_pattern_enforced(field, bad):
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(**{field: bad}))
    assert "string_pattern_mismatch" in error_types(exc)


@pytest.mark.parametrize("ok", ["googleai", "a", "gpt-4.1", "x:y_z", "0", "a" * 64])
def test_slug_pattern_accepts(ok):
    assert Charge.model_validate(wire(provider=ok)).provider == ok


def test_cached_exceeding_prompt_rejected():
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(prompt_tokens=10, cached_tokens=11))
    assert "cached_tokens" in str(exc.value)
    # equal is fine: every prompt token was a cache read
    assert Charge.model_validate(wire(prompt_tokens=10, cached_tokens=10)).cached_tokens == 10


def test_reasoning_exceeding_completion_rejected():
    with pytest.raises(ValidationError) as exc:
        Charge.model_validate(wire(completion_tokens=20, reasoning_tokens=21))
    assert "reasoning_tokens" in str(exc.value)
    assert Charge.model_validate(wire(completion_tokens=20, reasoning_tokens=20)).reasoning_tokens == 20


@pytest.mark.parametrize("pid", [42, 0, "42", "profile-abc"])
def test_user_profile_id_int_or_str(pid):
    c = Charge.model_validate(wire(user_profile_id=pid))
    assert c.user_profile_id == pid
    assert type(c.user_profile_id) is type(pid)


@pytest.mark.parametrize("bad", [True, 1.5, [1], {"id": 1}, "x" * 129])
def test_user_profile_id_wrong_types_rejected(bad):
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(user_profile_id=bad))


@pytest.mark.parametrize("bad", [2, 0, -1, "1", 1.0, True])
def test_schema_version_rejected(bad):
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(schema_version=bad))


def test_schema_version_1_ok():
    assert Charge.model_validate(wire(schema_version=1)).schema_version == 1


@pytest.mark.parametrize("field", ["model", "session_key", "reference"])
def test_notes_limited(field):
    assert getattr(Charge.model_validate(wire(**{field: "n" * 512})), field) == "n" * 512
    with pytest.raises(ValidationError):
        Charge.model_validate(wire(**{field: "n" * 513}))


def test_frozen():
    c = Charge.model_validate(wire())
    with pytest.raises(ValidationError):
        c.prompt_tokens = 99  # type: ignore[misc]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"total_tokens": 30, "cached_tokens": 3, "reasoning_tokens": 2},
        {"model": "m", "session_key": "s", "reference": "r", "user_profile_id": 7},
        {"user_profile_id": "p-7", "occurred_at": "2026-05-10T16:30:00.123456+05:30"},
    ],
)
def test_to_wire_round_trips(extra):
    c = Charge.model_validate(wire(**extra))
    out = c.to_wire()
    assert all(v is not None for v in out.values())
    assert isinstance(out["occurred_at"], str)
    assert out["total_tokens"] == c.total_tokens
    back = Charge.model_validate(out)
    assert back == c
    assert back.occurred_at == c.occurred_at
    assert back.occurred_at.utcoffset() == c.occurred_at.utcoffset()


def test_to_wire_leaves_out_none():
    out = Charge.model_validate(wire()).to_wire()
    for name in ("model", "session_key", "reference", "user_profile_id"):
        assert name not in out


def test_derived_total_obeys_the_same_bound_as_a_sent_total():
    big = wire(prompt_tokens=10**12, completion_tokens=10**12)
    sent = wire(prompt_tokens=10**12, completion_tokens=10**12, total_tokens=2 * 10**12)
    accepted: list[bool] = []
    for body in (big, sent):
        try:
            c = Charge.model_validate(body)
        except ValidationError:
            accepted.append(False)
        else:
            accepted.append(True)
            assert Charge.model_validate(c.to_wire()) == c
    assert accepted[0] == accepted[1]


def test_to_wire_round_trips_at_the_bound():
    c = Charge.model_validate(wire(prompt_tokens=10**12 - 5, completion_tokens=5))
    assert Charge.model_validate(c.to_wire()) == c
