"""`schemas/charge.schema.json`: the charge event as JSON Schema, for producers in other languages.

Generated from the pydantic model (`schemas.charge.Charge`), so it cannot say something the
consumer does not enforce; a test regenerates it and fails when the checked-in file differs
(`python -m streams.charge.schema --write` updates it). A record value is one charge object or
a non-empty array of charges of the record key's account.

Two things pydantic cannot express are added here: the slug pattern of provider and charge_type
(the model lower-cases before it checks the pattern, so pydantic leaves the pattern out; the
schema asks producers for the canonical lower-case form), and per-field descriptions. Rules
JSON Schema cannot state (total = prompt + completion, cached + cache writes ≤ prompt, reasoning ≤ completion,
≤ 64 KiB per charge, not too far in the future) are in the descriptions; the worker enforces them
and sends violations to the DLQ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.charge import SCHEMA_VERSION, SLUG_PATTERN, Charge

PATH = Path(__file__).resolve().parents[2] / "schemas" / "charge.schema.json"
SCHEMA_ID = "urn:billing-streams:schema:charge"

DESCRIPTIONS = {
    "event_id": "idempotency key (a UUID is recommended); a re-send with the same id counts once",
    "occurred_at": "event time, RFC 3339 with an offset or Z (naive times are rejected)",
    "account_id": "billed account; must equal the Kafka record key",
    "user_id": "user within the account",
    "provider": "LLM provider slug, e.g. openai, anthropic, googleai, metaai",
    "charge_type": "completion, plugin, tool (other slugs allowed)",
    "prompt_tokens": "input tokens",
    "completion_tokens": "output tokens",
    "total_tokens": "optional; when given it must equal prompt_tokens + completion_tokens",
    "cached_tokens": "part of prompt_tokens read from a cache (≤ prompt_tokens)",
    "cache_write_tokens": "part of prompt_tokens written to a cache, priced at the cache-write rate "
    "(cached_tokens + cache_write_tokens ≤ prompt_tokens)",
    "reasoning_tokens": "part of completion_tokens spent reasoning (≤ completion_tokens)",
    "reported_cost_nanos": "optional; what the caller's tooling said the call cost (e.g. LiteLLM's "
    "response_cost), in nano-units (10^-9) of the currency; summed to reconcile with, never billed",
    "model": "model name, carried but not aggregated",
    "session_key": "carried but not aggregated",
    "reference": "carried but not aggregated",
    "user_profile_id": "carried but not aggregated",
    "schema_version": f"version of this schema the producer follows ({SCHEMA_VERSION})",
}


def build() -> dict[str, Any]:
    """The schema of one record value: a charge or a non-empty batch of charges."""
    charge = TypeAdapter(Charge).json_schema(ref_template="#/$defs/{model}")
    defs = charge.pop("$defs", {})
    for name, prop in charge["properties"].items():
        prop["description"] = DESCRIPTIONS[name]  # KeyError: a new field needs a description
    for slug in ("provider", "charge_type"):
        charge["properties"][slug]["pattern"] = SLUG_PATTERN
    charge["description"] = (
        "One billable LLM call. At most 64 KiB of JSON; occurred_at at most BILLING_MAX_CLOCK_SKEW "
        "in the future and at most BILLING_LATE_HORIZON in the past."
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "billing-streams charges record value",
        "description": "The value of a record on the charges topic (key: account_id, UTF-8): one charge "
        "or a JSON array of charges of that account.",
        "oneOf": [
            {"$ref": "#/$defs/Charge"},
            {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Charge"}},
        ],
        "$defs": {**defs, "Charge": charge},
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write or check schemas/charge.schema.json")
    parser.add_argument("--write", action="store_true", help="rewrite the checked-in file")
    args = parser.parse_args(argv)
    if args.write:
        PATH.write_text(render())
        return 0
    if PATH.read_text() != render():
        print(f"{PATH} is stale: run python -m streams.charge.schema --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
