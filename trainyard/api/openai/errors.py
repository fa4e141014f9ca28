"""OpenAI's error envelope, `{"error": {"message", "type", "param", "code"}}`, on the OpenAI routes
only. What an error says (status, code, message, param) is `api.errors.translate`'s, as on every
other route; only its envelope is OpenAI's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from trainyard.api.deps import UnitOfWorkRoute
from trainyard.api.errors import ApiError, log_unexpected, translate

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def openai_error(error: ApiError) -> JSONResponse:
    status = error.status
    kind = _ERROR_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    headers = dict(error.headers or {})
    if 400 <= status < 500 and status not in (408, 429):
        # The openai client retries 409s (and, by default, more) unless told not to; a request that
        # was refused on its merits would only be refused again.
        headers["x-should-retry"] = "false"
    return JSONResponse(
        {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}},
        status_code=status,
        headers=headers,
    )


class OpenAIRoute(UnitOfWorkRoute):
    """Answers errors in OpenAI's envelope, a commit that failed included.

    The error is answered here, inside the dependencies' scope, so the session dependency never
    sees it: the session is rolled back first, so that nothing of the failed request is written.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                _rollback(request)
                log_unexpected(request, exc)
                return openai_error(translate(exc))

        return route


def _rollback(request: Request) -> None:
    session: Session | None = getattr(request.state, "session", None)
    if session is not None:
        session.rollback()
