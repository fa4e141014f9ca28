"""Team GPU quotas: a team's running jobs never hold more accelerators than its `max_concurrent_gpus`.

The claim statement counts a team's running accelerators in a snapshot; two claimers in parallel
would each see the same count and both claim the last GPUs. So a claim first takes a per-team
advisory lock, held to its commit, for every team with a quota whose jobs it may pick, and picks
jobs of quota'd teams only among those it locked: the next claimer for that team then counts
after this one has committed.

A job that can never fit (it needs more accelerators than its team's quota) is refused at create
(`check_gpu_quota`); one queued before its team's quota was lowered below its need fails at the
next claim with `quota_exceeded` rather than waiting forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.errors import Conflict
from trainyard.platform.models import Job

__all__ = ["QUOTA_EXCEEDED", "QuotaExceeded", "check_gpu_quota", "lock_quota_teams"]

QUOTA_EXCEEDED = "quota_exceeded"
# The class id of the two-key advisory locks on teams: neither 0 nor -1, so these keys never
# meet the one-key locks of pools (hashtext sign-extended to bigint).
_TEAM_LOCK_CLASS = 0x54595154

# A plan without a numeric count (hand-edited, or from an older scheduler) counts as none.
_NEED = (
    "CASE WHEN jsonb_typeof(j.plan -> 'accelerator_count') = 'number' "
    "THEN (j.plan ->> 'accelerator_count')::float8 ELSE 0 END"
)

_TEAMS_SQL = text(
    f"""
    SELECT DISTINCT j.team_id, hashtext(j.team_id) AS lock_key FROM jobs j
    JOIN teams t ON t.id = j.team_id
    WHERE j.status = '{states.QUEUED}' AND j.run_after <= now() AND t.max_concurrent_gpus IS NOT NULL
      AND (CAST(:pools AS text[]) IS NULL OR j.pool = ANY(CAST(:pools AS text[])))
    """
)

_UNFIT_SQL = text(
    f"""
    SELECT j.id, {_NEED} AS need, t.max_concurrent_gpus AS quota FROM jobs j
    JOIN teams t ON t.id = j.team_id
    WHERE j.team_id = ANY(CAST(:teams AS text[])) AND j.status = '{states.QUEUED}'
      AND {_NEED} > t.max_concurrent_gpus
    FOR UPDATE OF j SKIP LOCKED
    """
)


class QuotaExceeded(Conflict):
    """A job needs more accelerators at once than its team may hold."""

    code = QUOTA_EXCEEDED


def _accelerators(plan: Mapping[str, Any]) -> float:
    count = plan.get("accelerator_count")
    return float(count) if isinstance(count, int | float) and not isinstance(count, bool) else 0.0


def _unfit_message(need: float, quota: int) -> str:
    return (
        f"the job needs {need:g} accelerators at once and its team's quota (max_concurrent_gpus) "
        f"is {quota}: it could never run"
    )


def check_gpu_quota(quota: int | None, plan: Mapping[str, Any]) -> None:
    """Refuse (`QuotaExceeded`, 409) a plan that needs more accelerators than its team's quota
    (`Team.max_concurrent_gpus`; None: no quota)."""
    need = _accelerators(plan)
    if quota is not None and need > quota:
        raise QuotaExceeded(
            f"{_unfit_message(need, quota)}; choose a smaller instance_type (the plan chose "
            f"{plan.get('instance_type')}) or ask an admin to raise the quota",
            param="instance_type",
        )


def _fail_unfit(session: Session, teams: Sequence[str]) -> None:
    """Fail the queued jobs of `teams` that need more than their team's quota (it was lowered
    after they were created): they would otherwise wait forever."""
    rows = session.execute(_UNFIT_SQL, {"teams": list(teams)}).all()
    for job_id, need, quota in rows:
        job = session.get(Job, job_id)
        assert job is not None
        job.error_code = QUOTA_EXCEEDED
        job.error_message = _unfit_message(float(need), int(quota))
        states.transition(
            session,
            job,
            states.FAILED,
            message=f"job failed: {job.error_message}",
            data={"error_code": QUOTA_EXCEEDED},
            level="error",
        )
    if rows:
        session.flush()


def lock_quota_teams(session: Session, pools: Sequence[str] | None) -> list[str]:
    """Lock, until commit, every team with a quota that has a job claimable now (in `pools`, when
    given); return their ids. The claim must then pick jobs of quota'd teams among these only.

    Locks are taken in the order of their keys, so claimers never wait on each other in a cycle;
    a claim with capacity limits takes its pool locks before these.
    """
    rows = session.execute(_TEAMS_SQL, {"pools": list(pools) if pools is not None else None}).all()
    for key in sorted({int(row.lock_key) for row in rows}):
        session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:cls AS int4), CAST(:key AS int4))"),
            {"cls": _TEAM_LOCK_CLASS, "key": key},
        )
    teams = sorted(str(row.team_id) for row in rows)
    if teams:
        _fail_unfit(session, teams)
    return teams
