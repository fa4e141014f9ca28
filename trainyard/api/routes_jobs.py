"""/v1/jobs: thin routes over `trainyard.platform.submission` (create) and `trainyard.platform.jobs`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.deps import (
    IdempotencyKey,
    OrderQ,
    PrincipalDep,
    SessionDep,
    UnitOfWorkRoute,
    bracket_params,
)
from trainyard.api.openapi import errors
from trainyard.api.schemas import checkpoint_out, event_out, job_out, page
from trainyard.platform import costs, jobs, states, submission
from trainyard.platform.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)

LimitQ = Annotated[int, Query(ge=1, le=jobs.MAX_PAGE)]
# `jobs.list_jobs` checks the status (a 400); the schema states the choices.
StatusQ = Annotated[str | None, Query(json_schema_extra={"enum": list(states.STATUSES)})]


def _metadata_filters(request: Request) -> dict[str, str]:
    return bracket_params(request, "metadata", "metadata[key]=value")


@router.post("", status_code=201, responses=errors(403, 404, 409))
def create_job(
    spec: JobSpec,
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    job, created = submission.submit(
        session,
        principal,
        spec,
        planner=request.app.state.planner,
        sources=request.app.state.sources,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.status_code = 200
    return job_out(job)


@router.get("")
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    status: StatusQ = None,
    after: str | None = None,
    limit: LimitQ = 20,
) -> dict[str, Any]:
    rows, more = jobs.list_jobs(
        session, principal, status=status, metadata=_metadata_filters(request), after=after, limit=limit
    )
    return page(rows, more, job_out)


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    job = jobs.get_job(session, principal, job_id)
    return job_out(job, goodput=costs.job_goodput(session, job.id))


@router.post("/{job_id}/cancel", responses=errors(409))
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_out(jobs.cancel_job(session, principal, job_id))


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A new cap for the job (policy.max_cost_usd); the bounds are `jobs.resume_job`'s.
    max_cost_usd: float | None = Field(
        default=None, json_schema_extra={"exclusiveMinimum": 0, "maximum": 1e7}
    )


@router.post("/{job_id}/resume", responses=errors(409))
def resume_job(
    job_id: str, session: SessionDep, principal: PrincipalDep, body: ResumeIn | None = None
) -> dict[str, Any]:
    """Queue a paused job again, or one stopped for its budget (optionally with a higher
    `max_cost_usd`) once its cap and its team's budget allow: 409 `budget_exhausted` until then."""
    cap = body.max_cost_usd if body is not None else None
    return job_out(jobs.resume_job(session, principal, job_id, max_cost_usd=cap))


@router.get("/{job_id}/events")
def list_events(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = 20,
    order: OrderQ = "asc",
) -> dict[str, Any]:
    rows, more = jobs.list_events(session, principal, job_id, after=after, limit=limit, order=order)
    return page(rows, more, event_out)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: LimitQ = 20,
) -> dict[str, Any]:
    rows, more = jobs.list_checkpoints(session, principal, job_id, after=after, limit=limit)
    return page(rows, more, checkpoint_out)
