"""Domain errors with stable codes. The API maps them to HTTP once; the SDK maps them back."""

from __future__ import annotations


class TrainyardError(Exception):
    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(TrainyardError):
    status = 400
    code = "invalid_request"


class Unauthenticated(TrainyardError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(TrainyardError):
    status = 403
    code = "permission_denied"


class NotFound(TrainyardError):
    status = 404
    code = "not_found"


class Conflict(TrainyardError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TrainyardError):
    status = 413
    code = "payload_too_large"


class Unprocessable(TrainyardError):
    status = 422
    code = "unprocessable"


class LeaseLost(TrainyardError):
    """An attempt wrote after a newer attempt took the job over (fencing)."""

    status = 409
    code = "lease_lost"
