"""Metering: what each attempt costs while it runs and after, and the job's totals. Dollars come
from attempt rows (price x billable seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform.models import Job, JobAttempt

if TYPE_CHECKING:
    from trainyard.settings import Settings


class Metered(Protocol):
    """What `meter` reads and writes of an attempt: an ORM `JobAttempt` or a plain row."""

    started_at: datetime
    usd_per_hour: float
    billable_seconds: float
    cost_usd: float


def meter(attempt: Metered, until: datetime) -> None:
    """Bill the attempt from its start up to `until` (its price is fixed at claim time): its
    heartbeat while it runs, so an attempt nobody hears from accrues nothing more."""
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


@dataclass(frozen=True)
class PaceRule:
    """How much training an attempt must show before its pace is trusted for a projection."""

    min_steps: int = 10
    min_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PaceRule:
        from trainyard.settings import get_settings

        s = settings or get_settings()
        return cls(s.budget_projection_min_steps, s.budget_projection_min_seconds)


def projected_cost(
    job: Job, attempt: JobAttempt, now: datetime, pace: PaceRule | None = None
) -> float | None:
    """Spend so far plus the rest of the run at the training pace this attempt has shown; None
    until it has shown `pace.min_steps` steps over `pace.min_seconds`.

    The pace is measured from the attempt's first progress, not from its start: provisioning,
    the model download and Ray's start come before it and are no guide to the steps to come.
    """
    pace = pace or PaceRule()
    total = (job.progress or {}).get("total_steps")
    if attempt.pace_at is None or attempt.pace_step is None or not isinstance(total, int | float):
        return None
    steps = attempt.end_step - attempt.pace_step
    seconds = (now - attempt.pace_at).total_seconds()
    if steps < max(1, pace.min_steps) or seconds < pace.min_seconds or seconds <= 0:
        return None
    remaining_seconds = max(0.0, total - attempt.end_step) * seconds / steps
    return job.cost_usd + remaining_seconds / 3600.0 * attempt.usd_per_hour
