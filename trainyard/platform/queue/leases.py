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


def lock(
    session: Session, attempt_id: str, *, skip_locked: bool = False
) -> tuple[Job, JobAttempt, bool] | None:
    """Lock the attempt's job row, then the attempt row (the one lock order of the queue), and
    read both afresh; returns (job, attempt, whether its lease is still live by the database
    clock), or None for an unknown attempt (or, with `skip_locked`, a job row locked elsewhere).

    The rows are refreshed, not taken from the session, so a session that read them before still
    sees what others committed since. `FOR NO KEY UPDATE` serialises every writer of the rows
    without blocking the key-share locks that inserting an event or checkpoint takes on them.
    """
    job_id = session.scalar(select(JobAttempt.job_id).where(JobAttempt.id == attempt_id))
    if job_id is None:
        return None
    fresh = {"populate_existing": True}
    job = session.execute(
        select(Job)
        .where(Job.id == job_id)
        .with_for_update(key_share=True, skip_locked=skip_locked)
        .execution_options(**fresh)
    ).scalar_one_or_none()
    if job is None:
        return None
    attempt, live = session.execute(
        select(JobAttempt, JobAttempt.lease_expires_at > func.now())
        .where(JobAttempt.id == attempt_id)
        .with_for_update(key_share=True)
        .execution_options(**fresh)
    ).one()
    return job, attempt, bool(live)


def fence(session: Session, attempt_id: str) -> tuple[Job, JobAttempt]:
    """Lock the job row and check that `attempt_id` still owns it and that its lease has not
    expired (by the database clock, as the rescuer sees it); raise LeaseLost otherwise.

    Every write an attempt makes starts here, so a worker that lost its lease can never overwrite
    the work of the attempt that took over, nor renew a lease the rescuer may already act on.
    """
    locked = lock(session, attempt_id)
    if locked is None:
        raise LeaseLost(f"unknown attempt {attempt_id}")
    job, attempt, live = locked
    if (
        job.current_attempt_id != attempt_id
        or attempt.ended_at is not None
        or job.status not in states.ACTIVE
    ):
        raise LeaseLost(f"attempt {attempt_id} no longer owns job {job.id}")
    if not live:
        raise LeaseLost(f"attempt {attempt_id}'s lease on job {job.id} has expired")
    return job, attempt


def heartbeat(
    session: Session,
    attempt_id: str,
    *,
    lease_seconds: float = 60.0,
    progress: dict[str, Any] | None = None,
    pace: costs.PaceRule | None = None,
) -> Heartbeat:
    """Renew the lease, record progress and spend so far, and tell the worker whether to stop.

    `progress` carries the run's cumulative `tokens` (restored ones included) and `step`; the
    ledger turns them into what this attempt trained. `pace` says when a budget projection may
    go by the attempt's training pace (default: from the settings)."""
    job, attempt = fence(session, attempt_id)
    now = session.scalar(select(func.now()))
    assert now is not None
    attempt.heartbeat_at = now
    attempt.lease_expires_at = now + timedelta(seconds=lease_seconds)
    if progress:
        job.progress = {**(job.progress or {}), **progress}
        step, tokens = progress.get("step"), progress.get("tokens")
        costs.ledger.record_progress(attempt, step=step, tokens=tokens, now=now)
        if "tokens" in progress:
            # The job's count is the run's: how far its model has got, restored tokens included.
            job.tokens_trained = int(progress["tokens"])
        if progress.get("tokens_per_second"):
            attempt.tokens_per_second = float(progress["tokens_per_second"])
    costs.meter(attempt, now)
    costs.total_job_cost(session, job)
    stop = "cancelled" if job.cancel_requested else ("paused" if job.pause_requested else None)
    cap = (job.spec.get("policy") or {}).get("max_cost_usd")
    if stop is None and cap is not None:
        projected = costs.projected_cost(job, attempt, now, pace or costs.PaceRule.from_settings())
        if job.cost_usd > cap or (projected is not None and projected > cap):
            stop = "budget_exceeded"
    if stop is None:
        costs.budgets.warn(session, job, now)
    result = Heartbeat(attempt.lease_expires_at, job.cancel_requested, stop)
    session.commit()
    return result
