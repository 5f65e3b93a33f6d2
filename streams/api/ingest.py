"""`POST /v1/charges`: charges over HTTP onto the charges topic, acknowledged before the answer.

Why the answer waits for Kafka: a 202 promises that every accepted charge is on the topic
(acks=all), so a client may forget it; the worker then counts it exactly once. When Kafka does
not acknowledge within BILLING_API_DELIVERY_TIMEOUT the answer is 503 with Retry-After and the
event_ids of the accepted charges: some may have reached Kafka anyway, so the client resends
the same charges with those event_ids, and the worker's dedup by (account_id, event_id), within
BILLING_DEDUP_HORIZON, counts each once. That is the whole idempotency story: a retried request counts once because
its charges carry the same event_ids, whether the client chose them or copied them from a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic_core import to_json

from schemas.charge import Charge
from streams.api.auth import Caller, ingest_caller
from streams.api.bodies import (
    JSON,
    NDJSON,
    Refusal,
    elements_of,
    media_type,
    read_body,
)
from streams.api.errors import AUTH_RESPONSES, ErrorBody, retry_after
from streams.api.validate import check_elements, limits_now
from streams.errors import ApiError, DeliveryError

log = logging.getLogger("streams.api")
router = APIRouter()


class AcceptedCharge(BaseModel):
    index: int
    event_id: str


class RefusedCharge(BaseModel):
    index: int
    reason: str
    detail: str


class IngestResult(BaseModel):
    """Per element of the request: accepted (on Kafka) or refused, with its index."""

    accepted: int
    refused: int
    charges: list[AcceptedCharge]
    errors: list[RefusedCharge]


class Unavailable(ErrorBody):
    """Kafka did not acknowledge: resend the same charges with these event_ids."""

    event_ids: list[str]


def _charge_input_schema() -> dict[str, Any]:
    """The Charge schema as a client sends it: event_id and occurred_at may be left out."""
    schema = Charge.model_json_schema()
    schema["required"] = [f for f in schema.get("required", []) if f not in ("event_id", "occurred_at")]
    schema["title"] = "ChargeInput"
    return schema


CHARGE_REF = {"$ref": "#/components/schemas/ChargeInput"}


def component_schemas() -> dict[str, Any]:
    """Schemas the request body refers to (FastAPI only registers those of typed parameters)."""
    return {
        "ChargeInput": _charge_input_schema(),
        "CloudEvent": {
            "type": "object",
            "title": "CloudEvent",
            "description": "CloudEvents 1.0, structured mode; `id` is the event_id when data has none",
            "required": ["specversion", "id", "source", "type", "data"],
            "properties": {
                "specversion": {"type": "string", "enum": ["1.0"]},
                "id": {"type": "string"},
                "source": {"type": "string"},
                "type": {"type": "string"},
                "time": {"type": "string", "format": "date-time"},
                "datacontenttype": {"type": "string"},
                "data": CHARGE_REF,
            },
        },
    }


def _request_body() -> dict[str, Any]:
    """Declared: JSON (an array; one object is accepted too) and NDJSON. CloudEvents, single
    and batch, are described in the text and in `components.schemas.CloudEvent`: a request body
    with several JSON shapes breaks common client generators (an object-or-array union, or one
    media type per shape), and a client that cannot send JSON arrays is worse than none."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"type": "array", "items": CHARGE_REF}},
                NDJSON: {"schema": {"type": "string", "description": "one charge (JSON object) per line"}},
            },
        }
    }


async def _deliver(request: Request, charges: list[Charge]) -> bool:
    """Send and wait for Kafka's acknowledgements; False when not all came in time."""
    service = request.app.state.service
    producer = service.producer
    if producer is None:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.settings.api_delivery_timeout.total_seconds()
    problem = "timeout"
    try:
        async with asyncio.timeout_at(deadline):  # send() itself waits when the producer is full
            futures = {await producer.send(c) for c in charges}  # one per record, not per charge
        # asyncio.wait leaves the futures alone at the deadline: they belong to the producer.
        done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        failed = [f for f in done if f.cancelled() or f.exception() is not None]
        if not pending and not failed:
            return True
        problem = "DeliveryError" if failed else problem
    except TimeoutError:
        pass
    log.warning("ingest: Kafka did not acknowledge %d charges: %s", len(charges), problem)
    service.reap_failures()
    return False


def _result(checked: Any, caller: Caller) -> tuple[list[tuple[int, Charge]], dict[int, Refusal]]:
    """Accepted charges that this key may send, and every refusal by index."""
    refused = dict(checked.refused)
    allowed = []
    for index, charge in checked.charges:
        if caller.scope.may_ingest_for(charge.account_id):
            allowed.append((index, charge))
        else:
            refused[index] = Refusal(
                "forbidden_account", f"key {caller.key_id} may not send for this account"
            )
    return allowed, refused


@router.post(
    "/v1/charges",
    operation_id="post_charges",
    status_code=202,
    response_model=IngestResult,
    summary="Send charges (one, a JSON array, NDJSON, or CloudEvents)",
    responses={
        **AUTH_RESPONSES,
        400: {"model": ErrorBody, "description": "the body is not JSON / empty"},
        413: {"model": ErrorBody, "description": "the body or its number of charges is over the limit"},
        415: {"model": ErrorBody, "description": "unsupported Content-Type"},
        422: {"model": IngestResult, "description": "every element was refused"},
        503: {"model": Unavailable, "description": "Kafka did not acknowledge; resend with these event_ids"},
    },
    openapi_extra=_request_body(),
)
async def post_charges(request: Request, caller: Caller = Depends(ingest_caller)) -> Any:
    """202 only once Kafka has acknowledged every accepted charge; refused elements are listed
    with their index and reason (the worker's DLQ reasons). A retry with the same event_ids
    counts once.

    Bodies: `application/json` (one charge or an array), `application/x-ndjson` (a charge per
    line), `application/cloudevents+json` (one CloudEvent 1.0 whose `data` is a charge) and
    `application/cloudevents-batch+json` (an array of them); see the CloudEvent schema. A
    CloudEvent's `id` is the event_id when `data` has none, its `time` the occurred_at."""
    service = request.app.state.service
    settings = service.settings
    body = await read_body(request, settings.api_max_body_bytes)
    elements = elements_of(body, media_type(request))
    if len(elements) > settings.api_max_charges:
        raise ApiError(413, "too_many_charges", f"{len(elements)} charges exceed {settings.api_max_charges}")
    accepted, refused = _result(check_elements(elements, limits_now(settings)), caller)
    for refusal in refused.values():
        service.metrics.refused.labels(refusal.reason).inc()
    if accepted and not await _deliver(request, [c for _, c in accepted]):
        service.metrics.unavailable.inc()
        body_503 = Unavailable(
            error="kafka_unavailable",
            message="Kafka did not acknowledge in time; resend the same charges with these event_ids "
            "(a charge that arrives twice counts once)",
            event_ids=[c.event_id for _, c in accepted],
        )
        return JSONResponse(
            body_503.model_dump(),
            status_code=503,
            headers=retry_after(settings.api_retry_after.total_seconds()),
        )
    service.metrics.accepted.inc(len(accepted))
    # IngestResult's shape, built as plain data: a model per charge costs more than the rest of
    # a small request's answer (the schema stays IngestResult, tests check the two agree).
    result = {
        "accepted": len(accepted),
        "refused": len(refused),
        "charges": [{"index": i, "event_id": c.event_id} for i, c in accepted],
        "errors": [{"index": i, "reason": r.reason, "detail": r.detail} for i, r in sorted(refused.items())],
    }
    return Response(to_json(result), status_code=202 if accepted else 422, media_type="application/json")


def reap(producer: Any) -> asyncio.Task[None]:
    """Collect the producer's record of failed deliveries once they settle: this API has
    already answered 503 for them, and the list would otherwise grow for the process's life."""

    async def drain() -> None:
        with contextlib.suppress(DeliveryError):
            await producer.flush()

    return asyncio.create_task(drain(), name="api-reap-failures")
