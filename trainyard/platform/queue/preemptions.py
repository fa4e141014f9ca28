"""Preempted attempts count against the job's `max_preemptions`, apart from `max_attempts`.

A preemption is the capacity going away (a spot reclaim, a drained node), not the job failing, so
it does not use up one of the job's attempts; a job that keeps being preempted still ends, once
it has been preempted more than `max_preemptions` times.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import DEFAULT_MAX_PREEMPTIONS
from trainyard.platform.states import AttemptOutcome

EXHAUSTED = "preemptions_exhausted"


def max_preemptions(spec: dict[str, Any] | None) -> int:
    """The job's limit, from its spec (jobs created before the field existed get the default)."""
    value = (spec or {}).get("max_preemptions", DEFAULT_MAX_PREEMPTIONS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def preemptions(session: Session, job_id: str, *, besides: str | None = None) -> int:
    """The job's preempted attempts as written, leaving out the attempt `besides`."""
    query = select(func.count()).select_from(JobAttempt)
    query = query.where(JobAttempt.job_id == job_id, JobAttempt.outcome == AttemptOutcome.PREEMPTED)
    if besides is not None:
        query = query.where(JobAttempt.id != besides)
    return int(session.scalar(query) or 0)


def limit(
    session: Session,
    job_id: str,
    attempt_id: str,
    outcome: AttemptOutcome,
    retryable: bool,
    error_code: str | None,
    error_message: str | None,
) -> tuple[bool, str | None, str | None]:
    """The retry decision's inputs once preemptions are counted, attempt `attempt_id` (ending now,
    as `outcome`) included: (retryable, error code, message). A preemption beyond the job's
    `max_preemptions` is not retried, and says so."""
    if outcome != AttemptOutcome.PREEMPTED or not retryable:
        return retryable, error_code, error_message
    spec = session.scalar(select(Job.spec).where(Job.id == job_id))
    count = preemptions(session, job_id, besides=attempt_id) + 1
    allowed = max_preemptions(spec)
    if count <= allowed:
        return True, error_code, error_message
    last = f"; last: {error_message}" if error_message else ""
    return False, EXHAUSTED, f"gave up after {count} preemptions (max_preemptions {allowed}){last}"
