"""Moving a queued job to another pool: re-planned there by the same planner that placed it.

A move pins the job to the instance type it was moved to (and to spot or on-demand, when asked),
so dispatch leaves it where its owner put it. It is checked as a new job is: the type must be one
a pool of this deployment runs, the run must fit it (and the job's own policy: `max_cost_usd`,
allowed accelerators), the team's GPU quota must be able to hold it and its budget must take
any extra it costs. A move to where the job already is changes nothing, so a retry is harmless.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import db, events, jobs, queue, states
from trainyard.platform.auth import Principal
from trainyard.platform.errors import Conflict, InvalidRequest, Unprocessable
from trainyard.platform.models import Job
from trainyard.platform.planning import Planner, check_team_limits
from trainyard.platform.spec import JobSpec


def _not_movable(job: Job) -> Conflict:
    return Conflict(
        f"job {job.id} is {job.status}: only a queued job can move to another pool",
        code="job_not_movable",
        param="job_id",
    )


def _already_there(job: Job, instance_type: str, spot: bool | None) -> bool:
    plan = job.plan or {}
    return (
        job.pool == instance_type
        and job.spec.get("instance_type") == instance_type
        and (spot is None or bool(plan.get("spot")) == spot)
    )


def move_job(
    session: Session,
    principal: Principal,
    job_id: str,
    *,
    instance_type: str,
    spot: bool | None = None,
    planner: Planner,
) -> tuple[Job, bool]:
    """Move a queued job to the pool of `instance_type` (on spot capacity or not, when `spot` is
    given); returns (job, moved). Another team's job is a 404, as everywhere."""
    job = jobs.get_job(session, principal, job_id)
    pools = sorted(planner.available)
    if instance_type not in planner.available:
        raise InvalidRequest(
            f"no pool runs instance type {instance_type!r}; the pools are {', '.join(pools)}",
            code="instance_type_unavailable",
            param="instance_type",
        )
    if job.status != states.QUEUED:
        raise _not_movable(job)
    if _already_there(job, instance_type, spot):
        return job, False
    spec = JobSpec.model_validate(job.spec)
    policy = (
        spec.policy
        if spot is None
        else spec.policy.model_copy(update={"spot": "always" if spot else "never"})
    )
    moved_spec = spec.model_copy(update={"instance_type": instance_type, "policy": policy})
    db.release(session)  # planning may read the model config and the dataset from the store
    planned = planner.estimate(session, moved_spec)
    if planned.decision is None:
        assert planned.error is not None
        raise Unprocessable(
            f"job {job_id} cannot run on {instance_type}: {planned.error.message}",
            code=planned.error.code,
            param="spot" if planned.error.param == "policy" and spot is not None else "instance_type",
        )
    job = session.execute(
        select(Job).where(Job.id == job.id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    # Claimed, cancelled or moved while it was re-planned: the row as it is now decides.
    if job.status != states.QUEUED:
        raise _not_movable(job)
    if _already_there(job, instance_type, spot):
        return job, False
    new_plan = planner.plan_dict(planned)
    check_team_limits(session, job, new_plan)
    old_pool = job.pool
    plan = planner.place(job, planned, new_plan)
    job.spec = moved_spec.model_dump(mode="json")
    job.updated_at = states.utcnow()
    events.add(
        session,
        job.id,
        events.MESSAGE,
        f"moved from pool {old_pool} to {job.pool} by {principal.key_id}: {plan['reason']}",
        data={"from_pool": old_pool, "to_pool": job.pool, "moved_by": principal.key_id, "plan": plan},
    )
    queue.notify(session, job.pool)
    session.flush()
    return job, True
