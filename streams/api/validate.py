"""Request elements -> charges to send and refusals, by the worker's own rules.

The API refuses exactly what the worker would send to the DLQ, with the same reasons, because
it runs the same code: `streams.charge.decode.decode_record` on records shaped as a producer would
send them (one account's elements as a JSON array, key = account_id). Elements are grouped per
account so that a batch costs one pydantic-core call per account, not one per element; a
refusal's index is mapped back to the element's position in the request.

Before that, what a producer fills in when absent is filled the same way (`fill_defaults`:
event_id, occurred_at). A caller that wants a retry to count once sends its own event_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from schemas.charge import Charge
from streams.api.bodies import Element, Refusal
from streams.charge.decode import Limits, decode_record
from streams.charge.records import fill_defaults
from streams.config.settings import Settings

_NO_KEY = b""  # elements without a text account_id: validation refuses them before the key rule


@dataclass(slots=True)
class Checked:
    """Accepted charges with their request index, and refusals by index."""

    charges: list[tuple[int, Charge]] = field(default_factory=list)
    refused: dict[int, Refusal] = field(default_factory=dict)


def limits_now(settings: Settings) -> Limits:
    """The time rules as a worker consuming right now applies them."""
    return Limits(datetime.now(UTC), settings.max_clock_skew, settings.zone, settings.late_horizon)


def check_elements(elements: list[Element], limits: Limits) -> Checked:
    """Validate every element; never raises for bad input."""
    out = Checked()
    groups: dict[bytes, list[tuple[int, Any]]] = {}
    for index, element in enumerate(elements):
        if isinstance(element, Refusal):
            out.refused[index] = element
            continue
        key = _NO_KEY
        if isinstance(element, dict):
            if element.get("event_id") is None or element.get("occurred_at") is None:
                element = fill_defaults(element)
            account = element.get("account_id")
            if isinstance(account, str):
                key = account.encode("utf-8", "surrogatepass")
        groups.setdefault(key, []).append((index, element))
    for key, members in groups.items():
        # pydantic-core's encoder: several times json.dumps's speed, datetimes in ISO 8601.
        try:
            value = to_json([m[1] for m in members])
        except PydanticSerializationError:  # text that is not UTF-8 (a lone surrogate)
            value = b"\xff"  # decode_record's own verdict on bytes that are not JSON
        decoded = decode_record(value, key, limits)
        for position, charge in zip(decoded.positions, decoded.charges, strict=True):
            out.charges.append((members[position][0], charge))
        for rejection in decoded.rejections:
            refusal = Refusal(rejection.reason, rejection.detail)
            where = range(len(members)) if rejection.index is None else (rejection.index,)
            for position in where:
                out.refused[members[position][0]] = refusal
    out.charges.sort(key=lambda pair: pair[0])
    return out
