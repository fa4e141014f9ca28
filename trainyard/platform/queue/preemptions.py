"""Preempted attempts count against the job's `max_preemptions`, apart from `max_attempts`.

A preemption is the capacity going away (a spot reclaim, a drained node), not the job failing, so
it does not use up one of the job's attempts; a job that keeps being preempted still ends, once
it has been preempted more than `max_preemptions` times.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import DEFAULT_MAX_PREEMPTIONS
from trainyard.platform.states import AttemptOutcome

EXHAUSTED = "preemptions_exhausted"


def max_preemptions(job: Job) -> int:
    """The job's limit, from its spec (jobs created before the field existed get the default)."""
    value = (job.spec or {}).get("max_preemptions", DEFAULT_MAX_PREEMPTIONS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def preemptions(session: Session, job_id: str) -> int:
    """The job's preempted attempts (the session's pending changes included)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .where(JobAttempt.job_id == job_id, JobAttempt.outcome == AttemptOutcome.PREEMPTED)
        )
        or 0
    )


def limit(
    session: Session,
    job: Job,
    outcome: AttemptOutcome,
    retryable: bool,
    error_code: str | None,
    error_message: str | None,
) -> tuple[bool, str | None, str | None]:
    """The retry decision's inputs once preemptions are counted: (retryable, error code, message).
    A preemption beyond the job's `max_preemptions` is not retried, and says so."""
    if outcome != AttemptOutcome.PREEMPTED or not retryable:
        return retryable, error_code, error_message
    count, allowed = preemptions(session, job.id), max_preemptions(job)
    if count <= allowed:
        return True, error_code, error_message
    last = f"; last: {error_message}" if error_message else ""
    return False, EXHAUSTED, f"gave up after {count} preemptions (max_preemptions {allowed}){last}"
