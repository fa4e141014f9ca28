"""Queue answers: the caller's waiting jobs with where each stands and why, and moving a queued
job to another pool (`trainyard.platform.queue.answers`, `trainyard.platform.moves`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from trainyard.api.deps import OrderQ, PrincipalDep, SessionDep, UnitOfWorkRoute
from trainyard.api.openapi import errors
from trainyard.api.queue_answers import pace, queue_out
from trainyard.api.schemas import job_out
from trainyard.platform import moves
from trainyard.platform.queue import answers
from trainyard.platform.spec import InstanceTypeName

router = APIRouter(prefix="/v1", tags=["queue"], route_class=UnitOfWorkRoute)

LimitQ = Annotated[int, Query(ge=1, le=answers.MAX_PAGE)]


class MoveRequest(BaseModel):
    """Where to move a queued job: a pool's instance type, and spot or on-demand capacity
    (omitted: as the job's policy chooses)."""

    model_config = ConfigDict(extra="forbid")

    instance_type: InstanceTypeName
    spot: bool | None = None


@router.post("/jobs/{job_id}/move", responses=errors(404, 409, 422))
def move_job(
    job_id: str,
    body: MoveRequest,
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Move a queued job to another pool, re-planned there; 200 whether it moved or was there."""
    planner = request.app.state.planner
    job, _ = moves.move_job(
        session, principal, job_id, instance_type=body.instance_type, spot=body.spot, planner=planner
    )
    out = job_out(job)
    out["queue"] = queue_out(answers.answer(session, job, planner.deployment, pace=pace(request)))
    return out


@router.get("/queue/jobs", responses=errors(404))
def list_waiting(
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    team: str | None = None,
    pool: str | None = None,
    after: str | None = None,
    limit: LimitQ = 20,
    order: OrderQ = "asc",
) -> dict[str, Any]:
    """The caller's queued and paused jobs, by pool and in claim order (`desc`: the last in line
    first), each with its answer."""
    rows, more = answers.list_waiting(
        session,
        principal,
        request.app.state.deployment,
        team=team or None,
        pool=pool or None,
        after=after,
        limit=limit,
        order=order,
        pace=pace(request),
    )
    data = [{**job_out(job), "queue": queue_out(answer)} for job, answer in rows]
    return {"object": "list", "data": data, "has_more": more}
