"""Provider usage -> charge fields, against recorded payloads of each provider's documented shape.

The expected numbers in tests/fixtures/usage/*.json were worked out by hand from each provider's
rule (which counts sit inside which); they are not computed by the code under test.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.charge import Charge
from streams.charge.usage import charge_fields, detect_shape, merge_usage, parse_usage, usage_of
from streams.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "usage"
TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")


def _load(kind: str) -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        for case in json.loads(path.read_text())["cases"]:
            if kind in case:
                cases.append(pytest.param(case, id=f"{path.stem}:{case['name']}"))
    return cases


VALID, INVALID = _load("expected"), _load("error")


def _payload(case: dict[str, Any]) -> Any:
    return case["response"] if "response" in case else case["usage"]


def as_object(value: Any) -> Any:
    """Dicts as attribute objects, the way SDK models (pydantic, proto-plus) are read."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_object(v) for v in value]
    return value


def test_every_provider_and_edge_case_has_a_fixture() -> None:
    names = {p.id for p in VALID}
    for stem in ("openai_chat", "openai_responses", "anthropic", "gemini"):
        assert any(n.startswith(f"{stem}:") for n in names), stem
    for edge in ("no_cache", "all_cached", "reasoning_only", "missing"):
        assert any(edge in n for n in names), edge


@pytest.mark.parametrize("case", VALID)
def test_fixture_maps_to_expected_fields(case: dict[str, Any]) -> None:
    want = case["expected"]
    got = charge_fields(_payload(case))
    assert {k: got[k] for k in TOKENS} == {k: want[k] for k in TOKENS}
    assert got.get("provider") == want["provider"]
    assert got.get("model") == want.get("model")
    assert parse_usage(usage_of(_payload(case))).shape == want["shape"]


@pytest.mark.parametrize("case", VALID)
def test_attribute_objects_map_like_dicts(case: dict[str, Any]) -> None:
    assert charge_fields(as_object(_payload(case))) == charge_fields(_payload(case))


@pytest.mark.parametrize("case", VALID)
def test_mapped_fields_make_a_valid_charge(case: dict[str, Any]) -> None:
    fields = charge_fields(_payload(case))
    fields.setdefault("provider", "anthropic")
    charge = Charge.model_validate(
        fields
        | {"event_id": "e1", "occurred_at": datetime(2026, 11, 23, tzinfo=UTC)}
        | {"account_id": "acme", "user_id": "alice", "charge_type": "completion"}
    )
    assert charge.total == charge.prompt_tokens + charge.completion_tokens


@pytest.mark.parametrize("case", INVALID)
def test_unbillable_usage_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=_escape(case["error"])):
        charge_fields(_payload(case))


def _escape(text: str) -> str:
    return re.escape(text)


def test_none_is_refused() -> None:
    with pytest.raises(UsageError, match="no usage"):
        parse_usage(None)
    assert issubclass(UsageError, ValueError)


def test_openai_sdk_models_when_installed() -> None:
    types = pytest.importorskip("openai.types")
    responses = pytest.importorskip("openai.types.responses")
    chat = types.CompletionUsage.model_validate(
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920},
            "completion_tokens_details": {"reasoning_tokens": 128},
        }
    )
    assert parse_usage(chat).charge_fields() == {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "cached_tokens": 1920,
        "cache_write_tokens": 0,
        "reasoning_tokens": 128,
    }
    bare = types.CompletionUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7)  # details None
    assert parse_usage(bare).charge_fields()["cached_tokens"] == 0
    resp = responses.ResponseUsage.model_validate(
        {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 12, "cache_write_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 40},
            "total_tokens": 123,
        }
    )
    parsed = parse_usage(resp)
    assert (parsed.shape, parsed.cached_tokens, parsed.reasoning_tokens) == ("openai_responses", 12, 40)


def test_integral_floats_are_counts() -> None:
    assert parse_usage({"promptTokenCount": 12.0, "candidatesTokenCount": 3}).prompt_tokens == 12


def test_detect_shape_ignores_the_type() -> None:
    assert detect_shape(as_object({"prompt_token_count": 1})) == "gemini"
    assert detect_shape({"input_tokens": 1, "cache_read_input_tokens": None}) == "anthropic"


def test_merge_fills_and_checks() -> None:
    response = {"model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    merged = merge_usage({"account_id": "a", "provider": "azure"}, response)
    assert merged["provider"] == "azure"  # an explicit provider wins (Azure OpenAI, proxies)
    assert merged["model"] == "gpt-4o"
    assert merged["total_tokens"] == 15
    assert merge_usage({"prompt_tokens": 10}, response)["prompt_tokens"] == 10
    with pytest.raises(UsageError, match="prompt_tokens=11 disagrees"):
        merge_usage({"prompt_tokens": 11}, response)


def test_create_charge_takes_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Charge] = []

    class FakeProducer:
        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

        async def __aenter__(self) -> FakeProducer:
            return self

        async def __aexit__(self, *exc: Any) -> None: ...

        async def send(self, charge: Charge) -> None:
            sent.append(charge)

    from streams.producer import one_charge as producer

    monkeypatch.setattr(producer, "ChargeProducer", FakeProducer)
    usage = {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}
    charge = producer.create_charge(
        usage=usage | {"output_tokens": 9}, account_id="acme", user_id="alice", charge_type="completion"
    )
    assert sent == [charge]
    assert (charge.provider, charge.prompt_tokens, charge.cached_tokens, charge.total) == (
        "anthropic",
        121,
        100,
        130,
    )
    assert charge.completion_tokens == 9
    with pytest.raises(ValueError, match="known token fields"):
        producer.create_charge(usage={}, account_id="a", user_id="u", charge_type="completion")


counts = st.integers(0, 10**9)


@given(counts, counts, counts, counts)
def test_anthropic_prompt_is_the_sum_of_its_parts(fresh: int, written: int, read: int, out: int) -> None:
    u = {"input_tokens": fresh, "cache_creation_input_tokens": written, "cache_read_input_tokens": read}
    parsed = parse_usage(u | {"output_tokens": out})
    assert parsed.prompt_tokens == fresh + written + read
    assert parsed.cached_tokens == read <= parsed.prompt_tokens
    assert parsed.total_tokens == fresh + written + read + out


@given(counts, counts, counts, counts, st.booleans())
def test_gemini_completion_adds_thoughts(
    prompt: int, cand: int, thoughts: int, cached: int, camel: bool
) -> None:
    cached = min(cached, prompt)
    names = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount")
    snake = (
        "prompt_token_count",
        "candidates_token_count",
        "thoughts_token_count",
        "cached_content_token_count",
    )
    u = dict(zip(names if camel else snake, (prompt, cand, thoughts, cached), strict=True))
    parsed = parse_usage(u)  # no total given: the documented rule applies
    assert (parsed.completion_tokens, parsed.reasoning_tokens) == (cand + thoughts, thoughts)
    assert parsed.cached_tokens == cached


def test_cache_writes_are_their_own_part_of_the_prompt() -> None:
    anthropic = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 300,
        "output_tokens": 40,
    }
    assert parse_usage(anthropic).charge_fields() == {
        "prompt_tokens": 2350,
        "completion_tokens": 40,
        "total_tokens": 2390,
        "cached_tokens": 300,
        "cache_write_tokens": 2000,
        "reasoning_tokens": 0,
    }
    # LiteLLM's OpenAI shape: writes inside prompt_tokens, apart in the details (either name).
    for name in ("cache_write_tokens", "cache_creation_tokens"):
        chat = {
            "prompt_tokens": 2350,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 300, name: 2000},
        }
        assert parse_usage(chat).cache_write_tokens == 2000
    # More reads and writes than the prompt holds cannot be priced: refused, not guessed.
    with pytest.raises(UsageError, match="writes"):
        parse_usage(
            {
                "prompt_tokens": 100,
                "completion_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 50},
            }
        )
