"""Submission: the one way a job is created, and the one way a job is estimated.

Every dialect (`/v1/jobs`, `/v1/fine_tuning/jobs`) turns its request into a `JobSpec` and calls
`submit`; `/v1/estimates` calls `estimate`, which runs the same steps short of the budget and
the insert. The steps, in this order:

1. the Idempotency-Key: a job the team already created with it is returned as it is (or the
   request is refused with 409 when its body differs), before anything below runs, so a retried
   create is answered the same however the world moved since (budget spent, files deleted);
2. `file-...` ids resolved to the storage URIs the job will read, and an ft model id in
   `base_model` to its job's final model (another team's file or model is a 404);
3. sources: every one checked by the source policy and spelled canonically, before any is read;
4. the plan: instance type, pool, estimated time and cost (the reads of the model config and
   the dataset from the store or the hub hold no database connection: steps 1-3 are released),
   refused (`quota_exceeded`) when it needs more accelerators at once than the team's GPU quota;
5. the team's budget, which locks the team row until commit so racing creates cannot both
   spend its last dollars (a team without one, as the key was checked, has nothing to lock);
6. the insert, its `status` event, and the notification that wakes the pool's workers: one
   statement, committed on its own when there was no budget to lock.

Steps 1-3 read in autocommit (no snapshot is needed across them), as does planning when there
is no budget: a create of such a team is five statements and no BEGIN or COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from trainyard.platform import costs, db, files, jobs
from trainyard.platform.auth import Principal
from trainyard.platform.models import Job
from trainyard.platform.planning import Planner
from trainyard.platform.queue.quotas import check_gpu_quota
from trainyard.platform.scheduling import NoFeasibleOption
from trainyard.platform.sources import Reader, SourcePolicy
from trainyard.platform.spec import JobSpec

S = TypeVar("S", bound=JobSpec)


@dataclass(frozen=True)
class EstimateResult:
    """What a job would cost and take: the option its policy chooses (None, with `error`, when
    none is feasible) and every option considered, as the planner describes them."""

    model_parameters: int
    dataset_tokens: int
    chosen: dict[str, Any] | None
    error: NoFeasibleOption | None
    options: list[dict[str, Any]]


def submit(
    session: Session,
    principal: Principal,
    spec: JobSpec,
    *,
    planner: Planner,
    sources: SourcePolicy,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Create the job `spec` asks for; returns (job, created). `created` is False when the
    Idempotency-Key named a job this team already created with the same body."""
    # The body as the caller sent it (file ids, not the URIs they stand for) is what a replay repeats.
    digest = jobs.request_hash(spec)
    replay = jobs.find_replay(session, principal, idempotency_key, digest)
    if replay is not None:
        return replay, False
    spec = _resolve(session, principal, spec, planner=planner, sources=sources)
    db.release(session)  # planning reads the store and the hub; the write transaction comes after
    # A team without a budget has nothing to lock: planning's reads, then the insert with its
    # event and notification (one statement), each commit on their own.
    plan, pool = planner.plan(session, spec, autocommit=not principal.team_budgeted)
    check_gpu_quota(principal.team_max_concurrent_gpus, plan)
    if principal.team_budgeted:
        replay = _check_budget(session, principal, plan.get("estimated_cost_usd"), idempotency_key, digest)
        if replay is not None:
            return replay, False
    return jobs.create_job(
        session, principal, spec, idempotency_key=idempotency_key, plan=plan, pool=pool, digest=digest
    )


def estimate(
    session: Session, principal: Principal, spec: JobSpec, *, planner: Planner, sources: SourcePolicy
) -> EstimateResult:
    """Plan `spec` as `submit` would, and create nothing."""
    spec = _resolve(session, principal, spec, planner=planner, sources=sources)
    db.release(session)  # planning reads the store and the hub
    planned = planner.estimate(session, spec)
    return EstimateResult(
        model_parameters=planned.model.parameters,
        dataset_tokens=planned.tokens,
        chosen=planner.plan_dict(planned) if planned.decision else None,
        error=planned.error,
        options=[planner.option_dict(o) for o in planned.options],
    )


def _resolve(
    session: Session, principal: Principal, spec: S, *, planner: Planner, sources: SourcePolicy
) -> S:
    # Files and models first: their URIs are checked like any other, as the team's own.
    spec = files.resolve_spec_files(session, principal, spec)
    spec = planner.deployment.models.resolve_spec(session, principal, spec)
    return sources.check_spec(session, Reader(principal.team_id, is_admin=principal.is_admin), spec)


def _check_budget(
    session: Session,
    principal: Principal,
    estimated_cost_usd: float | None,
    idempotency_key: str | None,
    digest: str,
) -> Job | None:
    """Refuse a job its team cannot afford; None when it fits. A replay that raced its first
    request waited here for the team row that request locked: that job is in now, and is the
    answer (the job, or the 409 for another body) rather than `budget_exhausted`."""
    try:
        costs.check_budget(session, principal.team_id, estimated_cost_usd)
    except costs.BudgetExhausted:
        replay = jobs.find_replay(session, principal, idempotency_key, digest)
        if replay is None:
            raise
        return replay
    return None
