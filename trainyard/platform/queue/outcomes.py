"""How an attempt ends and where its job goes next: succeeded, cancelled, queued again (a hand-back,
or a retry after backoff), paused, or failed once its failures use up `max_attempts`.

An attempt ends by its own worker (`finish`, fenced) or, when its lease ran out, by whoever
rescues it (`rescue`); both go through `_end_attempt`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform import costs, states
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.queue.leases import fence
from trainyard.platform.queue.notifications import notify
from trainyard.platform.states import AttemptOutcome, JobStatus


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Exponential backoff between attempts: base, 2*base, 4*base, ... capped."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))


def _failures(session: Session, job_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .where(JobAttempt.job_id == job_id, JobAttempt.outcome.in_(sorted(states.COUNTS_AS_FAILURE)))
        )
        or 0
    )


def _end_attempt(
    session: Session,
    job: Job,
    attempt: JobAttempt,
    outcome: AttemptOutcome,
    *,
    error_code: str | None,
    error_message: str | None,
    retryable: bool,
    backoff_base: float,
    backoff_cap: float,
    billed_until: datetime | None = None,
) -> JobStatus:
    """Close the attempt and move the job to its next state; returns the job's new status."""
    now = session.scalar(select(func.now()))
    assert now is not None
    attempt.ended_at = now
    attempt.outcome = outcome
    attempt.error_code = error_code
    attempt.error_message = error_message
    costs.meter(attempt, billed_until or now)
    costs.total_job_cost(session, job)
    job.current_attempt_id = None
    info: dict[str, Any] = {"attempt": attempt.number, "outcome": str(outcome)}
    if outcome == AttemptOutcome.SUCCEEDED:
        dst = states.SUCCEEDED
        job.error_code = job.error_message = None
        msg = "job succeeded"
    elif job.cancel_requested or outcome == AttemptOutcome.CANCELLED:
        dst = states.CANCELLED
        msg = "job cancelled"
    elif outcome == AttemptOutcome.HANDED_BACK:
        dst = states.QUEUED
        job.run_after = now
        msg = f"attempt {attempt.number} handed back; queued again"
    else:
        session.flush()
        failures = _failures(session, job.id)
        if retryable and failures < job.max_attempts:
            delay = backoff_seconds(failures, base=backoff_base, cap=backoff_cap)
            job.run_after = now + timedelta(seconds=delay)
            dst = states.QUEUED
            msg = f"attempt {attempt.number} {outcome}; retrying in {delay:.0f}s"
            info["retry_in_seconds"] = delay
        else:
            dst = states.FAILED
            exhausted = retryable and failures >= job.max_attempts
            job.error_code = "attempts_exhausted" if exhausted else (error_code or "failed")
            job.error_message = (
                f"gave up after {failures} failed attempts; last: {error_message or outcome}"
                if exhausted
                else (error_message or outcome)
            )
            msg = f"job failed: {job.error_message}"
    if dst == states.QUEUED and job.status == states.CANCELLING:
        dst = states.CANCELLED
    elif dst == states.QUEUED and job.pause_requested:
        # Paused while this attempt ran: wait as paused; resume queues it from its latest checkpoint.
        dst = states.PAUSED
        msg = f"attempt {attempt.number} {outcome}; job paused"
    job.pause_requested = False
    if error_code:
        info["error_code"] = error_code
    states.transition(
        session,
        job,
        dst,
        message=msg,
        attempt_id=attempt.id,
        data=info,
        level="error" if dst == states.FAILED else "info",
    )
    if dst == states.QUEUED:
        notify(session, job.pool)
    return dst


def finish(
    session: Session,
    attempt_id: str,
    outcome: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    retryable: bool = True,
    backoff_base: float = 10.0,
    backoff_cap: float = 600.0,
    result: dict[str, Any] | None = None,
) -> JobStatus:
    """End an attempt (fenced) and commit; returns the job's new status.

    `outcome` is an `AttemptOutcome` or its value; any other raises ValueError.
    """
    ended = AttemptOutcome(outcome)
    job, attempt = fence(session, attempt_id)
    if result is not None:
        job.result = result
    dst = _end_attempt(
        session,
        job,
        attempt,
        ended,
        error_code=error_code,
        error_message=error_message,
        retryable=retryable,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )
    session.commit()
    return dst


def rescue(session: Session, *, backoff_base: float = 10.0, backoff_cap: float = 600.0) -> list[str]:
    """Requeue (or fail) jobs whose running attempt's lease expired; returns the job ids."""
    expired = session.scalars(
        select(JobAttempt)
        .where(JobAttempt.ended_at.is_(None), JobAttempt.lease_expires_at < func.now())
        .with_for_update(skip_locked=True)
        .limit(100)
    ).all()
    rescued: list[str] = []
    for attempt in expired:
        job = session.execute(select(Job).where(Job.id == attempt.job_id).with_for_update()).scalar_one()
        if job.current_attempt_id != attempt.id or job.status not in states.ACTIVE:
            attempt.ended_at = attempt.lease_expires_at
            attempt.outcome = AttemptOutcome.LOST
            continue
        _end_attempt(
            session,
            job,
            attempt,
            AttemptOutcome.LOST,
            error_code="lease_expired",
            error_message=f"worker {attempt.worker_id} stopped heartbeating",
            retryable=True,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            # A lost worker is billed up to its last sign of life, not until we noticed.
            billed_until=attempt.heartbeat_at,
        )
        rescued.append(job.id)
    session.commit()
    return rescued
