"""The OpenAI routes: `/v1/files` and `/v1/fine_tuning/jobs`, thin over the platform's file, job
and submission services. Errors on these routes, and only these, use OpenAI's envelope
(`OpenAIRoute`), so the rest of the API keeps Trainyard's.

Uploads are larger than the API's body limit: mount with `BodySizeLimitWithUploads` in place of
`BodySizeLimit` so that `POST /v1/files` alone gets `upload_body_limit(settings)`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Receive, Scope, Send

from trainyard.api.deps import IdempotencyKey, OrderQ, PrincipalDep, SessionDep, bracket_params
from trainyard.api.limits import BodySizeLimit
from trainyard.api.openai.errors import OpenAIRoute
from trainyard.api.openai.fine_tuning import FineTuningJobRequest, to_job_spec
from trainyard.api.openai.objects import (
    checkpoint_object,
    event_cursor,
    event_object,
    file_deleted,
    file_object,
    job_objects,
)
from trainyard.api.openapi import errors
from trainyard.platform import db, files, jobs, storage, submission
from trainyard.platform.errors import InvalidRequest

FILES_PATH = "/v1/files"
# Room for the multipart framing and the `purpose` field around the file itself.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
DEFAULT_JOB_PAGE = 20
DEFAULT_CHECKPOINT_PAGE = 10  # OpenAI's default for checkpoints
# `_limit` refuses less than 1 and cuts more than a page; the schema says the first.
LimitQ = Annotated[int, Query(json_schema_extra={"minimum": 1})]
PurposeForm = Annotated[str, Form(json_schema_extra={"enum": list(files.UPLOAD_PURPOSES)})]


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
    purpose: PurposeForm,
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
    return file_object(row)


@router.get("/files")
def list_files(
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = files.MAX_FILE_PAGE,
    order: OrderQ = "desc",
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
    return _page([file_object(r) for r in rows], more)


@router.get("/files/{file_id}")
def get_file(file_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return file_object(files.get_file(session, principal, file_id))


@router.delete("/files/{file_id}", responses=errors(409))
def delete_file(
    file_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    row = files.delete_file(session, principal, _store(request), file_id)
    return file_deleted(row)


@router.get("/files/{file_id}/content")
def file_content(file_id: str, session: SessionDep, principal: PrincipalDep) -> FileResponse:
    row = files.get_file(session, principal, file_id)
    db.release(session)  # the copy from the store holds no connection
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


@router.post("/fine_tuning/jobs", responses=errors(403, 404, 409))
def create_fine_tuning_job(
    body: FineTuningJobRequest,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    # OpenAI answers a create with 200, and so does a repeat with the same Idempotency-Key here.
    job, _created = submission.submit(
        session,
        principal,
        to_job_spec(body),
        planner=request.app.state.planner,
        sources=request.app.state.sources,
        idempotency_key=idempotency_key,
    )
    return job_objects(session, [job])[0]


@router.get("/fine_tuning/jobs")
def list_fine_tuning_jobs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = DEFAULT_JOB_PAGE,
) -> dict[str, Any]:
    rows, more = jobs.list_jobs(
        session, principal, metadata=_metadata_filters(request), after=after, limit=_limit(limit)
    )
    return _page(job_objects(session, rows), more)


@router.get("/fine_tuning/jobs/{job_id}")
def get_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_objects(session, [jobs.get_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel", responses=errors(409))
def cancel_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_objects(session, [jobs.cancel_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/pause", responses=errors(409))
def pause_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_objects(session, [jobs.pause_job(session, principal, job_id)])[0]


@router.post("/fine_tuning/jobs/{job_id}/resume", responses=errors(409))
def resume_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_objects(session, [jobs.resume_job(session, principal, job_id)])[0]


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_fine_tuning_events(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = DEFAULT_JOB_PAGE,
) -> dict[str, Any]:
    # OpenAI lists events newest first; `after` is the last event of the previous page.
    rows, more = jobs.list_events(
        session, principal, job_id, after=event_cursor(after), limit=_limit(limit), order="desc"
    )
    return _page([event_object(e) for e in rows], more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = DEFAULT_CHECKPOINT_PAGE,
) -> dict[str, Any]:
    rows, more = jobs.list_checkpoints(session, principal, job_id, after=after, limit=_limit(limit))
    return _page([checkpoint_object(c) for c in rows], more)


# -------------------------------------------------------------------------------- upload body limit


def upload_body_limit(settings: object) -> int:
    """The request body limit for `POST /v1/files`: the file limit plus the multipart framing."""
    return files.max_file_bytes(settings) + UPLOAD_OVERHEAD_BYTES


class BodySizeLimitWithUploads:
    """`BodySizeLimit` with a larger cap for file uploads; every other request keeps `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int) -> None:
        paths = (FILES_PATH, "/v1/fine_tuning")
        self.default = BodySizeLimit(app, max_bytes=max_bytes, openai_paths=paths)
        self.uploads = BodySizeLimit(app, max_bytes=max(max_bytes, upload_max_bytes), openai_paths=paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and str(scope.get("path", "")).rstrip("/") == FILES_PATH
        )
        await (self.uploads if upload else self.default)(scope, receive, send)
