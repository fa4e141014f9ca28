"""Typed errors, mapped back from the server's status and `{"error": {"code", "message", "param"}}`."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "TrainyardError",
    "UnprocessableEntityError",
    "WaitTimeoutError",
]


class TrainyardError(Exception):
    """Base of every error the SDK raises.

    `status_code` is None when no HTTP response came back (connection errors, timeouts).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.param = param

    def __str__(self) -> str:
        head = " ".join(str(p) for p in (self.status_code, self.code) if p is not None)
        tail = f" (param: {self.param})" if self.param else ""
        return f"{head}: {self.message}{tail}" if head else f"{self.message}{tail}"


class APIConnectionError(TrainyardError):
    """The server could not be reached, or the connection broke before a response came back."""

    def __init__(self, message: str = "could not connect to the Trainyard API", *, request: Any = None):
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    def __init__(self, message: str = "request to the Trainyard API timed out", *, request: Any = None):
        super().__init__(message, request=request)


class APIResponseValidationError(TrainyardError):
    """A 2xx response whose body is not what this client understands (not JSON, or the wrong shape)."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message, status_code=response.status_code)
        self.response = response


class APIStatusError(TrainyardError):
    """The server answered with a 4xx or 5xx status."""

    status_code: int

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        code: str | None = None,
        param: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, status_code=response.status_code, code=code, param=param)
        self.response = response
        self.body = body

    @property
    def request_id(self) -> str | None:
        value: str | None = self.response.headers.get("x-request-id")
        return value


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class WaitTimeoutError(TrainyardError, TimeoutError):
    """`jobs.wait` gave up before the job finished; `job` is the last state seen."""

    def __init__(self, message: str, *, job: Any) -> None:
        super().__init__(message)
        self.job = job


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

# The code decides only where the status alone does not (a proxy or gateway answering with an
# unusual status still carries the server's code through).
_BY_CODE: dict[str, type[APIStatusError]] = {
    "unauthenticated": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "payload_too_large": PayloadTooLargeError,
    "rate_limited": RateLimitError,
}


def make_status_error(response: httpx.Response, *, hint: str | None = None) -> APIStatusError:
    """Build the typed error for a 4xx/5xx response. The body must already be read."""
    body: Any = None
    code = param = None
    message = ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
        message = str(error.get("message") or "")
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]
    elif isinstance(body, str):
        # A proxy's HTML page would swamp the message; keep its start only.
        message = body.strip()[:300]
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    if hint:
        message = f"{message} ({hint})"
    status = response.status_code
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else _BY_CODE.get(code or "", APIStatusError)
    return cls(message, response=response, code=code, param=param, body=body)
