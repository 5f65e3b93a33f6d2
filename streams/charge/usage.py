"""Token usage from LLM provider responses, as charge fields ( docs/llm-apps.md).

Providers disagree on which counts sit inside which, and getting that wrong bills cached or
reasoning tokens twice or not at all. A Charge has one rule: `cached_tokens` (cache reads) and
`cache_write_tokens` are separate parts of `prompt_tokens`, `reasoning_tokens` part of
`completion_tokens`. Per provider:

- OpenAI chat completions: prompt_tokens already includes prompt_tokens_details.cached_tokens
  and prompt_tokens_details.cache_write_tokens (LiteLLM puts Anthropic's cache writes there),
  completion_tokens already includes completion_tokens_details.reasoning_tokens.
- OpenAI responses API: the same with input_tokens/output_tokens and their *_details.
- Anthropic messages: input_tokens EXCLUDES cache_creation_input_tokens and
  cache_read_input_tokens, so prompt = input + cache_creation + cache_read, cached = cache_read,
  cache writes = cache_creation.
  Thinking tokens are inside output_tokens with no separate count, so reasoning stays 0.
- Gemini usage_metadata: prompt_token_count includes cached_content_token_count;
  candidates_token_count EXCLUDES thoughts_token_count, so completion = candidates + thoughts;
  tool_use_prompt_token_count is outside prompt_token_count and billed as input, so it is added.

Objects are read by attribute or key (SDK models, plain dicts, Gemini REST camelCase), so no
SDK is imported. The provider's own total is never used: total = prompt + completion always.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import UsageError

Shape = Literal["openai_chat", "openai_responses", "anthropic", "input_output", "gemini"]
#: Charge.provider slug implied by a shape; "input_output" (bare input/output counts) is both
#: OpenAI responses and Anthropic, mapped identically, so it implies no provider.
PROVIDER_OF_SHAPE: Mapping[str, str] = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "anthropic": "anthropic",
    "gemini": "googleai",
}
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)

# Gemini's snake_case (google-genai SDK, Python dicts) and camelCase (REST JSON) names.
_GEMINI = {
    "prompt": ("prompt_token_count", "promptTokenCount"),
    "candidates": ("candidates_token_count", "candidatesTokenCount"),
    "cached": ("cached_content_token_count", "cachedContentTokenCount"),
    "thoughts": ("thoughts_token_count", "thoughtsTokenCount"),
    "tool_use": ("tool_use_prompt_token_count", "toolUsePromptTokenCount"),
    "total": ("total_token_count", "totalTokenCount"),
}
# Cache writes inside prompt/input details: OpenAI's name, then Anthropic's as LiteLLM mirrors it.
_WRITES = ("cache_write_tokens", "cache_creation_tokens")
_GEMINI_NAMES = frozenset(n for names in _GEMINI.values() for n in names)


@dataclass(frozen=True)
class TokenUsage:
    """Counts in the Charge's convention (cache reads and writes inside prompt, reasoning inside
    completion)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    shape: Shape
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def provider(self) -> str | None:
        """The Charge.provider slug this shape implies, None when the shape is ambiguous."""
        return PROVIDER_OF_SHAPE.get(self.shape)

    def charge_fields(self) -> dict[str, int]:
        """The token fields of a Charge."""
        return {name: getattr(self, name) for name in TOKEN_FIELDS}


def _has(obj: Any, name: str) -> bool:
    return name in obj if isinstance(obj, Mapping) else hasattr(obj, name)


def _get(obj: Any, *names: str) -> Any:
    """The first of `names` that is present and not None (SDK models leave absent fields None)."""
    if obj is None:
        return None
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _count(obj: Any, *names: str) -> int:
    """A token count, 0 when absent; a negative, fractional or non-numeric count is refused."""
    value = _get(obj, *names)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON round trip through some proxies turns 12 into 12.0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"usage field {names[0]} is {value!r}; expected an integer >= 0")
    return int(value)


def detect_shape(usage: Any) -> Shape:
    """Which provider format `usage` is, from the names it carries (never from its type)."""
    if usage is None:
        raise UsageError("no usage given")
    if any(_has(usage, name) for name in _GEMINI_NAMES):
        return "gemini"
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        return "openai_chat"
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        if _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
            return "anthropic"
        if any(_has(usage, n) for n in ("input_tokens_details", "output_tokens_details", "total_tokens")):
            return "openai_responses"
        return "input_output"
    raise UsageError(
        "usage has none of the known token fields (OpenAI prompt_tokens or input_tokens, "
        "Anthropic input_tokens, Gemini prompt_token_count/promptTokenCount)"
    )


def _gemini(u: Any) -> tuple[int, int, int, int]:
    counts = {key: _count(u, *names) for key, names in _GEMINI.items()}
    prompt = counts["prompt"] + counts["tool_use"]
    completion = counts["candidates"] + counts["thoughts"]
    thoughts, total = counts["thoughts"], counts["total"]
    if thoughts and total and total == prompt + counts["candidates"] and counts["candidates"] >= thoughts:
        # Some Vertex responses count thoughts inside candidates (their total says so; LiteLLM
        # PR 10141): adding them again would bill the thinking twice.
        completion = counts["candidates"]
    return prompt, completion, counts["cached"], thoughts


def parse_usage(usage: Any) -> TokenUsage:
    """Map one provider usage object or dict to the Charge's counts (see the module docstring)."""
    shape = detect_shape(usage)
    written = 0
    if shape == "gemini":
        prompt, completion, cached, reasoning = _gemini(usage)
    elif shape == "openai_chat":
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        details = _get(usage, "prompt_tokens_details")
        cached = _count(details, "cached_tokens")
        written = _count(details, *_WRITES) or _count(usage, "cache_creation_input_tokens")
        reasoning = _count(_get(usage, "completion_tokens_details"), "reasoning_tokens")
    elif shape == "anthropic":
        cached = _count(usage, "cache_read_input_tokens")
        written = _count(usage, "cache_creation_input_tokens")
        prompt = _count(usage, "input_tokens") + written + cached
        completion, reasoning = _count(usage, "output_tokens"), 0
    else:  # openai_responses, input_output
        prompt, completion = _count(usage, "input_tokens"), _count(usage, "output_tokens")
        details = _get(usage, "input_tokens_details")
        cached, written = _count(details, "cached_tokens"), _count(details, *_WRITES)
        reasoning = _count(_get(usage, "output_tokens_details"), "reasoning_tokens")
    if cached > prompt:
        raise UsageError(f"{shape} usage: cached tokens ({cached}) exceed prompt tokens ({prompt})")
    if cached + written > prompt:
        raise UsageError(
            f"{shape} usage: cache reads ({cached}) and writes ({written}) exceed prompt tokens ({prompt})"
        )
    if reasoning > completion:
        raise UsageError(f"{shape} usage: reasoning tokens ({reasoning}) exceed completion ({completion})")
    return TokenUsage(prompt, completion, cached, reasoning, shape, written)


def usage_of(response: Any) -> Any:
    """The usage inside a whole response (`.usage`, Gemini `.usage_metadata`), or `response`
    itself when it already is one. A response without usage is an error, not zero tokens."""
    for name in ("usage", "usage_metadata", "usageMetadata"):
        if _has(response, name):
            usage = _get(response, name)
            if usage is None:
                raise UsageError(
                    f"the response's {name} is empty (OpenAI streaming: pass "
                    "stream_options={'include_usage': True}; bill the final chunk)"
                )
            return usage
    return response


def _model_of(response: Any) -> str | None:
    model = _get(response, "model", "model_version", "modelVersion")
    return model if isinstance(model, str) and model else None


def charge_fields(response_or_usage: Any) -> dict[str, Any]:
    """Token fields, plus `provider` (when the shape tells) and `model` (when the response does)."""
    parsed = parse_usage(usage_of(response_or_usage))
    fields: dict[str, Any] = parsed.charge_fields()
    if parsed.provider:
        fields["provider"] = parsed.provider
    model = _model_of(response_or_usage)
    if model:
        fields["model"] = model
    return fields


def merge_usage(fields: Mapping[str, Any], usage: Any) -> dict[str, Any]:
    """`fields` completed from `usage` (a response or its usage): explicit arguments win for
    provider and model; a token count given both ways must agree, or it is refused."""
    derived = charge_fields(usage)
    merged = dict(fields)
    for name in TOKEN_FIELDS:
        given, found = merged.get(name), derived.get(name, 0)
        if given is not None and given != found:
            raise UsageError(f"{name}={given!r} disagrees with the usage ({found})")
        if name in derived:
            merged[name] = found
    for name in ("provider", "model"):
        if merged.get(name) is None and name in derived:
            merged[name] = derived[name]
    return merged
