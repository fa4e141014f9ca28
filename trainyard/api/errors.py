"""Errors at the HTTP boundary: `translate` maps any exception to one `ApiError` (status, code,
message, param), for every route. Trainyard's routes answer it as `{"error": {"code", "message",
"param"}}`; the OpenAI routes put the same error in OpenAI's envelope. Never a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainyard.platform import db
from trainyard.platform.errors import TrainyardError

log = logging.getLogger("trainyard.api")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "rate_limited",
}
_TYPE_CODES = {"missing": "missing_parameter", "extra_forbidden": "unknown_parameter"}
_LOCATIONS = ("body", "query", "path", "header")


@dataclass(frozen=True)
class ApiError:
    status: int
    code: str
    message: str
    param: str | None = None
    headers: dict[str, str] | None = None


def _param(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in _LOCATIONS]
    return ".".join(parts) or None


def _validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """A request that failed validation (pydantic's `errors()`): 400 when the body is not a JSON
    object at all, else 422 naming the first bad parameter."""
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    kind = str(first.get("type", ""))
    if kind in ("json_invalid", "json_type"):
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {first.get('msg')}")
    loc = tuple(first.get("loc", ()))
    if _param(loc) is None and kind in ("model_attributes_type", "dict_type", "missing"):
        return ApiError(400, "invalid_json", "request body must be a JSON object")
    code = _TYPE_CODES.get(kind) or (
        "invalid_type" if kind.endswith("_type") or "parsing" in kind else "invalid_value"
    )
    param = _param(loc)
    msg = str(first.get("msg", "invalid value"))
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ApiError(422, code, message, param)


# What a client can cause; anything else is a bug, logged where it is answered.
EXPECTED: tuple[type[Exception], ...] = (
    TrainyardError,
    RequestValidationError,
    StarletteHTTPException,
    json.JSONDecodeError,
)


def translate(exc: Exception) -> ApiError:
    """The one mapping from an exception to what the client is told. Anything unexpected is a
    500 that says nothing of its cause."""
    if db.is_outage(exc):
        exc = db.DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, TrainyardError):
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return ApiError(exc.status, exc.code, exc.message, exc.param, headers)
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "error")
        return ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}) or None)
    if isinstance(exc, json.JSONDecodeError):
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {exc.msg}")
    return ApiError(500, "internal_error", "internal error; it has been logged")


def log_unexpected(request: Request, exc: Exception) -> None:
    if db.is_outage(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    elif not isinstance(exc, EXPECTED):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)


def error_response(
    status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "param": param}}, status_code=status, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    async def _answer(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(request, exc)
        error = translate(exc)
        return error_response(error.status, error.code, error.message, error.param, error.headers)

    # Database errors are named so that they are answered where the expected ones are: Starlette's
    # last-resort `Exception` handler answers and then re-raises, and the client may get nothing.
    for kind in (*EXPECTED, *db.DATABASE_ERRORS, Exception):
        app.add_exception_handler(kind, _answer)
