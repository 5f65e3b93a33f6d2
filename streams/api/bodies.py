"""Request bodies of `POST /v1/charges` -> one candidate charge (or one refusal) per element.

Four shapes, told apart by Content-Type: JSON (one object or an array), NDJSON (one JSON value
per line), and CloudEvents 1.0 in structured mode, single or batch, whose `data` is the charge.
A CloudEvent's `id` becomes the charge's event_id when `data` has none, and its `time` the
occurred_at: CloudEvents producers already give every event a unique id and re-send it
unchanged on retry, which is exactly what idempotent counting needs.

Bodies are read with a hard byte limit (413 past it) before any parsing, so a client cannot
make the service buffer more than BILLING_API_MAX_BODY_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic_core import from_json

from streams.errors import ApiError

JSON, NDJSON = "application/json", "application/x-ndjson"
CLOUDEVENT, CLOUDEVENT_BATCH = "application/cloudevents+json", "application/cloudevents-batch+json"
MEDIA_TYPES = (JSON, NDJSON, CLOUDEVENT, CLOUDEVENT_BATCH)
_NDJSON_ALIASES = frozenset({NDJSON, "application/jsonl", "application/jsonlines", "application/ndjson"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one element of a request is not a charge (the reasons of the DLQ, and a few more)."""

    reason: str
    detail: str


Element = Any  # a JSON value to validate as a charge, or a Refusal already decided


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    value = request.headers.get("content-type", JSON).split(";", 1)[0].strip().lower()
    return NDJSON if value in _NDJSON_ALIASES else value


def _load(body: bytes) -> Any:
    """pydantic-core's parser: faster than json.loads, and it bounds nesting itself."""
    try:
        return from_json(body)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {str(exc)[:200]}") from None


def _ndjson(body: bytes) -> list[Element]:
    elements: list[Element] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            elements.append(from_json(line))
        except ValueError:
            elements.append(Refusal("invalid_json", "this line is not JSON"))
    return elements


def from_cloudevent(event: Any) -> Element:
    """The charge inside one structured-mode CloudEvent 1.0, or why there is none."""
    if not isinstance(event, dict):
        return Refusal("bad_cloudevent", "a CloudEvent is a JSON object")
    if event.get("specversion") != "1.0":
        return Refusal("bad_cloudevent", 'specversion must be "1.0"')
    for name in ("id", "source", "type"):
        if not isinstance(event.get(name), str) or not event[name]:
            return Refusal("bad_cloudevent", f"the CloudEvent attribute {name!r} is required")
    content = event.get("datacontenttype", JSON)
    if not isinstance(content, str) or "json" not in content.lower() or "data_base64" in event:
        return Refusal("bad_cloudevent", "data must be JSON (datacontenttype application/json)")
    data = event.get("data")
    if not isinstance(data, dict):
        return Refusal("bad_cloudevent", "data must be a charge (a JSON object)")
    charge = dict(data)
    if charge.get("event_id") is None:
        charge["event_id"] = event["id"]
    if charge.get("occurred_at") is None and event.get("time") is not None:
        charge["occurred_at"] = event["time"]
    return charge


def elements_of(body: bytes, kind: str) -> list[Element]:
    """The elements of a body of media type `kind`, in request order (indexes are positions)."""
    if not body.strip():
        raise ApiError(400, "empty_body", "send a charge, a JSON array of charges or NDJSON")
    if kind == NDJSON:
        return _ndjson(body)
    if kind == JSON:
        value = _load(body)
        if isinstance(value, list):
            if not value:
                raise ApiError(400, "empty_body", "the array holds no charge")
            return value
        return [value]
    if kind == CLOUDEVENT:
        return [from_cloudevent(_load(body))]
    if kind == CLOUDEVENT_BATCH:
        events = _load(body)
        if not isinstance(events, list) or not events:
            raise ApiError(400, "bad_cloudevent", "a CloudEvents batch is a non-empty JSON array")
        return [from_cloudevent(e) for e in events]
    raise ApiError(415, "unsupported_media_type", f"Content-Type must be one of {', '.join(MEDIA_TYPES)}")
