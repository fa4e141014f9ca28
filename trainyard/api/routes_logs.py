"""/v1/jobs/{id}/logs: an attempt's output, read from the store (see `trainyard.platform.logs`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from trainyard.api.deps import PrincipalDep, SessionDep, UnitOfWorkRoute
from trainyard.api.openapi import errors
from trainyard.platform import logs, storage

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)


def _store(request: Request) -> storage.ObjectStore:
    store: storage.ObjectStore | None = getattr(request.app.state, "logs_store", None)
    if store is None:
        store = storage.open_store(request.app.state.settings.storage_uri)
        request.app.state.logs_store = store
    return store


@router.get("/{job_id}/logs", responses=errors(404))
def job_logs(
    job_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
    tail: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> dict[str, Any]:
    """The attempt's log from byte `after` (or its last `tail` lines); follow a running attempt
    by asking again with `after` = `next_offset` until `complete`."""
    found = logs.job_log(session, principal, _store(request), job_id, attempt=attempt, after=after, tail=tail)
    chunk = found.chunk
    return {
        "object": "job.log",
        "job_id": found.job_id,
        "job_status": found.job_status,
        "attempt": chunk.attempt,
        "attempts": found.attempts,
        "offset": chunk.offset,
        "next_offset": chunk.next_offset,
        "data": chunk.text,
        # The attempt ended and its whole log was read: nothing more will come.
        "complete": chunk.complete,
    }
