"""What a job leaves behind, for its own team: `/v1/jobs/{id}/model` (the final model's files, one
streamed at a time) and `/v1/jobs/{id}/cost-report`. Thin routes over `trainyard.platform.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from trainyard.api.deps import PrincipalDep, SessionDep, StoreDep, UnitOfWorkRoute
from trainyard.api.openapi import errors
from trainyard.platform import outputs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)


@router.get("/{job_id}/model", responses=errors(404))
def list_model_files(
    job_id: str, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> dict[str, Any]:
    """The final model's files (paths relative to the model directory, sizes); 404 until it exists."""
    return outputs.final_model_files(session, principal, store, job_id)


@router.get("/{job_id}/model/{path:path}", responses=errors(404))
def get_model_file(
    job_id: str, path: str, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> FileResponse:
    """One file of the final model, as bytes."""
    fd, tmp = tempfile.mkstemp(prefix="trainyard-model-")
    os.close(fd)
    try:
        outputs.fetch_final_model_file(session, principal, store, job_id, path, tmp)
    except BaseException:
        _unlink(tmp)
        raise
    return FileResponse(
        tmp,
        media_type="application/octet-stream",
        filename=path.rsplit("/", 1)[-1],
        background=BackgroundTask(_unlink, tmp),
    )


@router.get("/{job_id}/cost-report", responses=errors(404))
def get_cost_report(
    job_id: str, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> dict[str, Any]:
    """The job's cost report: the one published at its end, else the figures so far."""
    return outputs.cost_report(session, principal, store, job_id)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
