"""Every refusal of the API has one JSON shape: a machine-readable `error` and a human `message`.

Clients branch on `error` (stable words such as `missing_key`, `forbidden_account`); `message`
says what to do about it. Nothing in either echoes a key or a request body back.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from streams.errors import ApiError


class ErrorBody(BaseModel):
    """A refused request."""

    error: str
    message: str


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = ErrorBody(error=exc.error, message=exc.message)
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Bad query parameters: 400 naming the parameter, without echoing its value."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    body = ErrorBody(error="bad_request", message="; ".join(parts) or "invalid request")
    return JSONResponse(body.model_dump(), status_code=400)


#: OpenAPI `responses=` entries for the refusals every protected route can give.
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no key, an unknown key or a revoked key"},
    403: {"model": ErrorBody, "description": "the key's scope does not allow this"},
}
