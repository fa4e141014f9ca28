"""An attempt's lease: `fence` guards every write it makes, `heartbeat` renews it and says when to stop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform import costs, states
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt


@dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime
    cancel_requested: bool
    # Why the attempt must stop, if it must: "cancelled", "paused" or "budget_exceeded".
    stop_reason: str | None = None


def fence(session: Session, attempt_id: str) -> tuple[Job, JobAttempt]:
    """Lock the job row and check that `attempt_id` still owns it; raise LeaseLost otherwise.

    Every write an attempt makes starts here, so a worker that lost its lease can never overwrite
    the work of the attempt that took over.
    """
    attempt = session.get(JobAttempt, attempt_id)
    if attempt is None:
        raise LeaseLost(f"unknown attempt {attempt_id}")
    job = session.execute(select(Job).where(Job.id == attempt.job_id).with_for_update()).scalar_one()
    session.refresh(attempt)
    if (
        job.current_attempt_id != attempt_id
        or attempt.ended_at is not None
        or job.status not in states.ACTIVE
    ):
        raise LeaseLost(f"attempt {attempt_id} no longer owns job {job.id}")
    return job, attempt


def heartbeat(
    session: Session,
    attempt_id: str,
    *,
    lease_seconds: float = 60.0,
    progress: dict[str, Any] | None = None,
) -> Heartbeat:
    """Renew the lease, record progress and spend so far, and tell the worker whether to stop."""
    job, attempt = fence(session, attempt_id)
    now = session.scalar(select(func.now()))
    assert now is not None
    attempt.heartbeat_at = now
    attempt.lease_expires_at = now + timedelta(seconds=lease_seconds)
    if progress:
        job.progress = {**(job.progress or {}), **progress}
        if "tokens" in progress:
            attempt.tokens_trained = int(progress["tokens"])
            job.tokens_trained = int(progress["tokens"])
        if progress.get("tokens_per_second"):
            attempt.tokens_per_second = float(progress["tokens_per_second"])
    costs.meter(attempt, now)
    costs.total_job_cost(session, job)
    stop = "cancelled" if job.cancel_requested else ("paused" if job.pause_requested else None)
    cap = (job.spec.get("policy") or {}).get("max_cost_usd")
    if stop is None and cap is not None:
        projected = costs.projected_cost(job, attempt, now)
        if job.cost_usd > cap or (projected is not None and projected > cap):
            stop = "budget_exceeded"
    result = Heartbeat(attempt.lease_expires_at, job.cancel_requested, stop)
    session.commit()
    return result
