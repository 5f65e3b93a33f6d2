"""schemas/charge.schema.json is generated from the model and checked in: it must not drift."""

from __future__ import annotations

import json
import re
from datetime import datetime

from schemas.charge import Charge
from streams.charge import schema as charge_schema
from streams.testing.synthetic import synthetic_charges


def test_checked_in_schema_matches_the_model() -> None:
    assert charge_schema.PATH.read_text() == charge_schema.render(), (
        "schemas/charge.schema.json is stale: run `python -m streams.charge.schema --write`"
    )
    assert charge_schema.main([]) == 0


def test_schema_describes_every_field_and_the_batch_form() -> None:
    schema = json.loads(charge_schema.PATH.read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    charge = schema["$defs"]["Charge"]
    assert set(charge["properties"]) == set(Charge.model_fields)
    assert set(charge["required"]) == {n for n, f in Charge.model_fields.items() if f.is_required()}
    assert charge["additionalProperties"] is False
    assert all(p.get("description") for p in charge["properties"].values())
    assert schema["oneOf"][1]["items"] == {"$ref": "#/$defs/Charge"}


def test_what_the_producer_library_sends_fits_the_schema() -> None:
    """A hand-rolled check (no validator dependency): keys, required fields, slug patterns."""
    charge = json.loads(charge_schema.PATH.read_text())["$defs"]["Charge"]
    props = charge["properties"]
    for c in synthetic_charges(200, seed=5):
        wire = c.to_wire()
        assert set(charge["required"]) <= set(wire) <= set(props)
        for slug in ("provider", "charge_type"):
            assert re.match(props[slug]["pattern"], wire[slug])
        assert datetime.fromisoformat(wire["occurred_at"]).tzinfo is not None
        for count in ("prompt_tokens", "completion_tokens"):
            assert props[count]["minimum"] <= wire[count] <= props[count]["maximum"]


def test_the_plain_kafka_client_example_in_the_docs_is_a_valid_charge() -> None:
    doc = (charge_schema.PATH.parents[1] / "docs" / "operations.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("acme|{"))
    key, value = line.split("|", 1)
    parsed = Charge.model_validate_json(value)
    assert parsed.account_id == key
    assert set(json.loads(value)) <= set(
        json.loads(charge_schema.PATH.read_text())["$defs"]["Charge"]["properties"]
    )
