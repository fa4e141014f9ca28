"""/v1/jobs: thin routes over `trainyard.platform.submission` (create) and `trainyard.platform.jobs`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from trainyard.api.deps import (
    Authorization,
    IdempotencyKey,
    OrderQ,
    PrincipalDep,
    SessionDep,
    UnitOfWorkRoute,
    bracket_params,
    unit_of_work,
)
from trainyard.api.openapi import errors
from trainyard.api.queue_answers import pace, queue_out
from trainyard.api.schemas import checkpoint_out, event_out, job_out, page
from trainyard.platform import costs, jobs, loss_curve, states, submission
from trainyard.platform.auth import Principal
from trainyard.platform.queue import answers
from trainyard.platform.registry import fine_tuned
from trainyard.platform.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)

LimitQ = Annotated[int, Query(ge=1, le=jobs.MAX_PAGE)]
# `jobs.list_jobs` checks the status (a 400); the schema states the choices.
StatusQ = Annotated[str | None, Query(json_schema_extra={"enum": list(states.STATUSES)})]


def _metadata_filters(request: Request) -> dict[str, str]:
    return bracket_params(request, "metadata", "metadata[key]=value")


# 401 and 503 as the dependencies would document them: `unit_of_work` authenticates and commits.
@router.post("", status_code=201, responses=errors(401, 403, 404, 409, 503))
async def create_job(
    spec: JobSpec,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    def work(session: Session, principal: Principal) -> tuple[dict[str, Any], bool]:
        job, created = submission.submit(
            session,
            principal,
            spec,
            planner=request.app.state.planner,
            sources=request.app.state.sources,
            idempotency_key=idempotency_key,
        )
        return job_out(job), created

    body, created = await unit_of_work(request, authorization, work)
    # Returned as it is: the body is JSON already, with nothing for a response model to check.
    return JSONResponse(body, status_code=201 if created else 200)  # type: ignore[return-value]


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
    models = fine_tuned.model_ids(session, rows)
    return page(rows, more, lambda job: job_out(job, fine_tuned_model=models.get(job.id)))


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, principal: PrincipalDep, request: Request) -> dict[str, Any]:
    job = jobs.get_job(session, principal, job_id)
    model = fine_tuned.model_ids(session, [job]).get(job.id)
    out = job_out(job, goodput=costs.job_goodput(session, job.id), fine_tuned_model=model)
    # Queued and paused jobs say where they stand and why; others carry null.
    out["queue"] = queue_out(answers.answer(session, job, request.app.state.deployment, pace=pace(request)))
    return out


@router.post("/{job_id}/cancel", responses=errors(409))
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_out(jobs.cancel_job(session, principal, job_id))


@router.post("/{job_id}/pause", responses=errors(409))
def pause_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """A queued job pauses at once; a running one checkpoints, frees its instance, then pauses."""
    return job_out(jobs.pause_job(session, principal, job_id))


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


@router.get("/{job_id}/loss-curve", responses=errors(404))
def get_loss_curve(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    points: Annotated[int, Query(ge=2, le=loss_curve.MAX_POINTS)] = loss_curve.DEFAULT_POINTS,
) -> dict[str, Any]:
    """The training loss by step, each point with its attempt, thinned to at most `points`
    (each attempt's first and last kept); `eval` holds the checkpoints' evaluation losses."""
    return loss_curve.loss_curve(session, principal, job_id, points=points)
