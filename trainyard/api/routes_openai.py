"""OpenAI-compatible `/v1/files` and `/v1/fine_tuning/jobs`, so scripts written for OpenAI's
fine-tuning API run against Trainyard with only `base_url` and `api_key` changed.

Thin routes over `trainyard.platform.files` and `trainyard.platform.finetuning`. Errors on these
routes, and only these, use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`;
`OpenAIRoute` renders it, so the rest of the API keeps Trainyard's.

Uploads are larger than the API's body limit: mount with `BodySizeLimitWithUploads` in place of
`BodySizeLimit` so that `POST /v1/files` alone gets `upload_body_limit(settings)`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from trainyard.api.deps import PrincipalDep, SessionDep, bracket_params
from trainyard.api.limits import BodySizeLimit
from trainyard.platform import files, finetuning, jobs, storage
from trainyard.platform.errors import InvalidRequest, TrainyardError

log = logging.getLogger("trainyard.api.openai")

FILES_PATH = "/v1/files"
# Room for the multipart framing and the `purpose` field around the file itself.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
DEFAULT_JOB_PAGE = 20
DEFAULT_CHECKPOINT_PAGE = 10  # OpenAI's default for checkpoints


# ------------------------------------------------------------------------------------------ errors

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
# Codes for errors Starlette raises itself (an unknown method, a body over the limit).
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def openai_error(
    status: int,
    message: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = _ERROR_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    out = dict(headers or {})
    if 400 <= status < 500 and status not in (408, 429):
        # The openai client retries 409s (and, by default, more) unless told not to; a request that
        # was refused on its merits would only be refused again.
        out["x-should-retry"] = "false"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
        headers=out,
    )


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    kind = str(first.get("type", ""))
    if kind in ("json_invalid", "json_type"):
        return openai_error(400, f"request body is not valid JSON: {first.get('msg')}", "invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    if not loc and kind in ("model_attributes_type", "dict_type", "missing"):
        return openai_error(400, "request body must be a JSON object", "invalid_json")
    code = {"missing": "missing_parameter", "extra_forbidden": "unknown_parameter"}.get(kind, "invalid_value")
    return openai_error(400, f"{param}: {msg}" if param else msg, code, param)


class OpenAIRoute(APIRoute):
    """Answers errors in OpenAI's envelope.

    The error is answered here, inside the dependencies' scope, so the session dependency never
    sees it and would commit: the session is rolled back first, so that commit writes nothing.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except TrainyardError as exc:
                _rollback(request)
                headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
                return openai_error(exc.status, exc.message, exc.code, exc.param, headers)
            except RequestValidationError as exc:
                _rollback(request)
                return _validation_error(exc)
            except StarletteHTTPException as exc:
                _rollback(request)
                headers = dict(exc.headers or {})
                code = _HTTP_CODES.get(exc.status_code)
                return openai_error(exc.status_code, str(exc.detail), code, None, headers)
            except Exception:
                _rollback(request)
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error(500, "internal error; it has been logged", "internal_error")

        return route


def _rollback(request: Request) -> None:
    session: Session | None = getattr(request.state, "session", None)
    if session is not None:
        session.rollback()


# ------------------------------------------------------------------------------------ dependencies


def _store(request: Request) -> storage.ObjectStore:
    store: storage.ObjectStore | None = getattr(request.app.state, "openai_store", None)
    if store is None:
        # Opening contacts nothing, so doing it on first use keeps app start-up free of I/O.
        store = storage.open_store(request.app.state.settings.storage_uri)
        request.app.state.openai_store = store
    return store


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _limit(value: int, default_max: int = jobs.MAX_PAGE) -> int:
    # OpenAI's limits are larger than ours; a bigger page than we serve is cut, and has_more says
    # so, rather than refused: a client's paginator then simply asks again.
    if value < 1:
        raise InvalidRequest(f"limit must be at least 1, got {value}", param="limit")
    return min(value, default_max)


def _metadata_filters(request: Request) -> dict[str, str]:
    return bracket_params(request, "metadata", "metadata[key]=value")


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# ------------------------------------------------------------------------------------------- files


@router.post("/files")
def create_file(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
) -> dict[str, Any]:
    row = files.upload_file(
        session,
        principal,
        _store(request),
        file.file,
        filename=file.filename,
        purpose=purpose,
        max_bytes=files.max_file_bytes(request.app.state.settings),
    )
    return files.file_object(row)


@router.get("/files")
def list_files(
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: int = files.MAX_FILE_PAGE,
    order: str = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    rows, more = files.list_files(
        session,
        principal,
        purpose=purpose,
        after=after,
        limit=_limit(limit, files.MAX_FILE_PAGE),
        order=order,
    )
    return _page([files.file_object(r) for r in rows], more)


@router.get("/files/{file_id}")
def get_file(file_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return files.file_object(files.get_file(session, principal, file_id))


@router.delete("/files/{file_id}")
def delete_file(
    file_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    row = files.delete_file(session, principal, _store(request), file_id)
    return {"id": row.id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(file_id: str, session: SessionDep, principal: PrincipalDep) -> FileResponse:
    row = files.get_file(session, principal, file_id)
    fd, tmp = tempfile.mkstemp(prefix="trainyard-content-")
    os.close(fd)
    try:
        files.copy_content(row, tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return FileResponse(
        tmp,
        media_type="application/octet-stream",
        filename=row.filename,
        background=BackgroundTask(_unlink, tmp),
    )


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# ------------------------------------------------------------------------------- fine-tuning jobs


@router.post("/fine_tuning/jobs")
def create_fine_tuning_job(
    body: finetuning.FineTuningJobRequest,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    # OpenAI answers a create with 200, and so does a repeat with the same Idempotency-Key here.
    job, _created = finetuning.create_job(
        session,
        principal,
        body,
        planner=request.app.state.planner,
        allow_local_paths=request.app.state.settings.allow_local_paths,
        idempotency_key=idempotency_key,
    )
    return finetuning.job_objects(session, [job])[0]


@router.get("/fine_tuning/jobs")
def list_fine_tuning_jobs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: int = DEFAULT_JOB_PAGE,
) -> dict[str, Any]:
    rows, more = jobs.list_jobs(
        session, principal, metadata=_metadata_filters(request), after=after, limit=_limit(limit)
    )
    return _page(finetuning.job_objects(session, rows), more)


@router.get("/fine_tuning/jobs/{job_id}")
def get_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return finetuning.job_objects(session, [jobs.get_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return finetuning.job_objects(session, [jobs.cancel_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return finetuning.job_objects(session, [finetuning.pause_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return finetuning.job_objects(session, [finetuning.resume_job(session, principal, job_id)])[0]


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_fine_tuning_events(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: int = DEFAULT_JOB_PAGE,
) -> dict[str, Any]:
    # OpenAI lists events newest first; `after` is the last event of the previous page.
    rows, more = jobs.list_events(
        session, principal, job_id, after=finetuning.event_cursor(after), limit=_limit(limit), order="desc"
    )
    return _page([finetuning.event_object(e) for e in rows], more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: int = DEFAULT_CHECKPOINT_PAGE,
) -> dict[str, Any]:
    rows, more = jobs.list_checkpoints(session, principal, job_id, after=after, limit=_limit(limit))
    return _page([finetuning.checkpoint_object(c) for c in rows], more)


# -------------------------------------------------------------------------------- upload body limit


def upload_body_limit(settings: object) -> int:
    """The request body limit for `POST /v1/files`: the file limit plus the multipart framing."""
    return files.max_file_bytes(settings) + UPLOAD_OVERHEAD_BYTES


class BodySizeLimitWithUploads:
    """`BodySizeLimit` with a larger cap for file uploads; every other request keeps `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int) -> None:
        self.default = BodySizeLimit(app, max_bytes=max_bytes)
        self.uploads = BodySizeLimit(app, max_bytes=max(max_bytes, upload_max_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and str(scope.get("path", "")).rstrip("/") == FILES_PATH
        )
        await (self.uploads if upload else self.default)(scope, receive, send)
