"""Metering: what each attempt costs while it runs and after, and the job's totals. Dollars come
from attempt rows (price x billable seconds)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform.models import Job, JobAttempt


def meter(attempt: JobAttempt, until: datetime) -> None:
    """Bill a running attempt up to `until` (its price is fixed at claim time)."""
    attempt.billable_seconds = max(0.0, (until - attempt.started_at).total_seconds())
    attempt.cost_usd = attempt.billable_seconds / 3600.0 * attempt.usd_per_hour


def total_job_cost(session: Session, job: Job) -> None:
    """Set the job's dollars and billable seconds to the sum over its attempts."""
    session.flush()
    rows = session.execute(
        select(JobAttempt.cost_usd, JobAttempt.billable_seconds).where(JobAttempt.job_id == job.id)
    ).all()
    job.cost_usd = float(sum(r[0] for r in rows))
    job.billable_seconds = float(sum(r[1] for r in rows))


def projected_cost(job: Job, attempt: JobAttempt, now: datetime) -> float | None:
    """Spend so far plus the rest of the run at the pace this attempt has shown; None until
    there is a pace to go by."""
    progress = job.progress or {}
    step, total = progress.get("step"), progress.get("total_steps")
    if not step or not total:
        return None
    done = step - attempt.start_step
    elapsed = (now - attempt.started_at).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    remaining_seconds = max(0, total - step) * elapsed / done
    return job.cost_usd + remaining_seconds / 3600.0 * attempt.usd_per_hour
