"""An attempt's lease: `fence` guards every write it makes, `heartbeat` renews it and says when to stop.

`lock` and `fence` give ORM rows, for the writes an attempt makes as it runs; `lock_rows` and
`fence_rows` give plain ones from one statement, for the end of an attempt (`queue.outcomes`),
which writes them back in one statement too. Both lock the job row, then the attempt row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from trainyard.platform import costs, replanning, states
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt


@dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime
    cancel_requested: bool
    # Why the attempt must stop, if it must: "cancelled", "paused", "replanned" (the job moved to
    # other capacity) or "budget_exceeded".
    stop_reason: str | None = None


@dataclass(slots=True)
class JobRow:
    """The job columns an attempt's end reads and may change."""

    id: str
    status: str
    pool: str | None
    cancel_requested: bool
    pause_requested: bool
    max_attempts: int
    current_attempt_id: str | None
    error_code: str | None
    error_message: str | None
    run_after: datetime
    result: dict[str, Any] | None


@dataclass(slots=True)
class AttemptRow:
    """An attempt's row as its end reads it and writes it back: its ledger line (`costs.ledger`)
    and its metering (`costs.meter`) are updated in place."""

    id: str
    job_id: str
    number: int
    worker_id: str
    started_at: datetime
    heartbeat_at: datetime
    lease_expires_at: datetime
    ended_at: datetime | None
    outcome: str | None
    error_code: str | None
    error_message: str | None
    usd_per_hour: float
    start_step: int
    start_tokens: int
    end_step: int
    end_tokens: int
    prior_step: int
    prior_tokens: int
    tokens_trained: int
    steps_recomputed: int
    tokens_recomputed: int
    pace_step: int | None
    pace_at: datetime | None
    billable_seconds: float
    cost_usd: float


@dataclass(slots=True)
class Locked:
    """A job and its attempt, locked until commit; `live`: its lease has not expired by the
    database clock; `now`: the database clock; `failures`: the job's other attempts that ended
    in an outcome that uses up one of its `max_attempts`."""

    job: JobRow
    attempt: AttemptRow
    live: bool
    now: datetime
    failures: int


_JOB_COLUMNS = [f.name for f in fields(JobRow)]
_ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRow)]


def _lock_sql(skip_locked: bool) -> Any:
    # The order of the locking clauses is the order the rows are locked in: job, then attempt.
    # The locked rows are read as they are once locked (READ COMMITTED re-reads a row it waited
    # for); the count of other attempts is read as of the statement's start. Those rows change
    # only under the job's lock, and only when the rescuer closes an attempt its job had left
    # behind: an end that waited on that reads as if it had come first.
    return text(
        f"""
        SELECT {", ".join(f"j.{c}" for c in _JOB_COLUMNS)}, {", ".join(f"a.{c}" for c in _ATTEMPT_COLUMNS)},
               a.lease_expires_at > now() AS live, now() AS now,
               (SELECT count(*) FROM job_attempts f
                WHERE f.job_id = j.id AND f.id <> a.id
                  AND f.outcome IN ({states.sql_list(frozenset(states.COUNTS_AS_FAILURE))})) AS failures
        FROM job_attempts a JOIN jobs j ON j.id = a.job_id
        WHERE a.id = :attempt_id
        FOR NO KEY UPDATE OF j{" SKIP LOCKED" if skip_locked else ""} FOR NO KEY UPDATE OF a
        """
    )


_LOCK_SQL = {skip: _lock_sql(skip) for skip in (False, True)}


def lock_rows(session: Session, attempt_id: str, *, skip_locked: bool = False) -> Locked | None:
    """`lock` in one statement, as plain rows: None for an unknown attempt (or, with
    `skip_locked`, a job row locked elsewhere)."""
    row = session.execute(_LOCK_SQL[skip_locked], {"attempt_id": attempt_id}).one_or_none()
    if row is None:
        return None
    values = tuple(row)
    n_job, n_attempt = len(_JOB_COLUMNS), len(_ATTEMPT_COLUMNS)
    job = JobRow(*values[:n_job])
    attempt = AttemptRow(*values[n_job : n_job + n_attempt])
    live, now, failures = values[n_job + n_attempt :]
    return Locked(job, attempt, bool(live), now, int(failures))


def fence_rows(session: Session, attempt_id: str) -> Locked:
    """`fence` in one statement, as plain rows."""
    locked = lock_rows(session, attempt_id)
    if locked is None:
        raise LeaseLost(f"unknown attempt {attempt_id}")
    _check_owner(
        attempt_id,
        locked.job.id,
        locked.job.current_attempt_id,
        locked.attempt.ended_at,
        locked.job.status,
        locked.live,
    )
    return locked


def _check_owner(
    attempt_id: str, job_id: str, current: str | None, ended_at: datetime | None, status: str, live: bool
) -> None:
    if current != attempt_id or ended_at is not None or status not in states.ACTIVE:
        raise LeaseLost(f"attempt {attempt_id} no longer owns job {job_id}")
    if not live:
        raise LeaseLost(f"attempt {attempt_id}'s lease on job {job_id} has expired")


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
    _check_owner(attempt_id, job.id, job.current_attempt_id, attempt.ended_at, job.status, live)
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
    ledger turns them into what this attempt trained. Its `phase` (and a sweep's `trial` of
    `trials`) must be spelled as `states.checked_progress` says: ValueError otherwise. `pace`
    says when a budget projection may go by the attempt's training pace (default: from the
    settings)."""
    progress = states.checked_progress(progress) if progress else None
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
    if stop is None and replanning.superseded(job, attempt):
        # The deadline contract moved the job (at a checkpoint): hand it back to run elsewhere.
        stop = "replanned"
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
