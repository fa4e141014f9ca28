"""How an attempt ends and where its job goes next: succeeded, cancelled, queued again (a hand-back,
or a retry after backoff), paused, or failed once its failures use up `max_attempts`.

An attempt ends by its own worker (`finish`, fenced) or, when its lease ran out, by whoever
rescues it (`rescue`); both go through `_end_attempt`, and both lock the job row, then the attempt
row (`leases.lock`), the one lock order of the queue.

Given a store, the end is settled in two steps (`_settle`) so that the job's cost report is in
the store before the job ends (or pauses), with no transaction open while it is written:
the end is computed and rolled back, the report it gives is published, then the same end (at the
same instant) is computed again and committed, provided it still gives the same report.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.durations import format_duration
from trainyard.platform import costs, replanning, states
from trainyard.platform.costs.reports import publish_cost_report, record_cost_report
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.queue import preemptions
from trainyard.platform.queue.leases import fence, lock
from trainyard.platform.queue.notifications import notify
from trainyard.platform.states import AttemptOutcome, JobStatus

if TYPE_CHECKING:
    from trainyard.platform.storage import ObjectStore


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
    now: datetime,
    billed_until: datetime | None = None,
) -> JobStatus:
    """Close the attempt at `now` and move the job to its next state; returns the job's new status."""
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
        retryable, error_code, error_message = preemptions.limit(
            session, job, outcome, retryable, error_code, error_message
        )
        failures = _failures(session, job.id)
        if retryable and failures < job.max_attempts:
            delay = backoff_seconds(failures, base=backoff_base, cap=backoff_cap)
            job.run_after = now + timedelta(seconds=delay)
            dst = states.QUEUED
            msg = f"attempt {attempt.number} {outcome}; retrying in {format_duration(delay)}"
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
    replanning.after_attempt(session, job, attempt, dst, now)
    if dst == states.QUEUED:
        notify(session, job.pool)
    return dst


Lock = Callable[[], tuple[Job, JobAttempt] | None]
REPORTED = states.TERMINAL | {states.PAUSED}
End = Callable[[Job, JobAttempt, datetime], JobStatus | None]


def _settle(session: Session, lock_rows: Lock, end: End, store: ObjectStore | None) -> JobStatus | None:
    """Lock, end and commit; with a store, publish the cost report of that end first.

    `lock_rows` returns the locked (job, attempt) or None when there is nothing to end; `end`
    applies the end at a given instant and returns the job's new status (None: nothing for the
    job, no report). Raises whatever the store or the database raise, with nothing committed.
    """
    at: datetime | None = None
    published: tuple[dict[str, Any], str] | None = None
    while True:
        rows = lock_rows()
        if rows is None:
            session.rollback()
            return None
        job, attempt = rows
        if at is None:
            at = session.scalar(select(func.now()))
            assert at is not None
        dst = end(job, attempt, at)
        # A job going back to the queue has not ended: its report comes when it does.
        if store is None or dst is None or dst not in REPORTED:
            session.commit()
            return dst
        session.flush()
        report = costs.cost_report(session, job.id)
        if published is not None and published[0] == report:
            record_cost_report(session, job, attempt.id, report, published[1])
            session.commit()
            return dst
        # The first pass, or the job changed while the report was written (a cancel came in):
        # publish what this end gives and settle it again.
        session.rollback()
        published = (report, publish_cost_report(store, report))


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
    store: ObjectStore | None = None,
) -> JobStatus:
    """End an attempt (fenced) and commit; returns the job's new status. With `store`, the job's
    cost report is written there before the commit (see `_settle`).

    `outcome` is an `AttemptOutcome` or its value; any other raises ValueError.
    """
    ended = AttemptOutcome(outcome)

    def end(job: Job, attempt: JobAttempt, now: datetime) -> JobStatus:
        if result is not None:
            job.result = result
            costs.ledger.record_result(attempt, result)
        return _end_attempt(
            session,
            job,
            attempt,
            ended,
            error_code=error_code,
            error_message=error_message,
            retryable=retryable,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            now=now,
        )

    dst = _settle(session, lambda: fence(session, attempt_id), end, store)
    assert dst is not None
    return dst


def rescue(
    session: Session,
    *,
    backoff_base: float = 10.0,
    backoff_cap: float = 600.0,
    store: ObjectStore | None = None,
) -> list[str]:
    """Requeue (or fail) jobs whose running attempt's lease expired; returns the job ids.

    Each job is rescued in a transaction of its own. A job row another transaction holds (its
    attempt heartbeating right now, or a cancel) is skipped until the next pass, so the rescuer
    never waits on a live attempt; a lease renewed meanwhile is left alone. "Expired" is the same
    test `fence` makes, on the database clock.
    """
    expired = session.execute(
        select(JobAttempt.id, JobAttempt.job_id)
        .where(JobAttempt.ended_at.is_(None), JobAttempt.lease_expires_at <= func.now())
        .order_by(JobAttempt.lease_expires_at)
        .limit(100)
    ).all()
    session.rollback()
    rescued: list[str] = []
    for attempt_id, job_id in expired:
        if _rescue_one(session, attempt_id, backoff_base, backoff_cap, store) is not None:
            rescued.append(job_id)
    return rescued


def _rescue_one(
    session: Session, attempt_id: str, backoff_base: float, backoff_cap: float, store: ObjectStore | None
) -> JobStatus | None:
    def lock_rows() -> tuple[Job, JobAttempt] | None:
        rows = lock(session, attempt_id, skip_locked=True)
        if rows is None:
            return None
        job, attempt, live = rows
        return None if live or attempt.ended_at is not None else (job, attempt)

    def end(job: Job, attempt: JobAttempt, now: datetime) -> JobStatus | None:
        if job.current_attempt_id != attempt.id or job.status not in states.ACTIVE:
            # Its job already moved on without it: close it, nothing else changes.
            attempt.ended_at = attempt.lease_expires_at
            attempt.outcome = AttemptOutcome.LOST
            return None
        return _end_attempt(
            session,
            job,
            attempt,
            AttemptOutcome.LOST,
            error_code="lease_expired",
            error_message=f"worker {attempt.worker_id} stopped heartbeating",
            retryable=True,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            now=now,
            # A lost worker is billed up to its last sign of life, not until we noticed.
            billed_until=attempt.heartbeat_at,
        )

    return _settle(session, lock_rows, end, store)
