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

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.orm import Session

from trainyard.durations import format_duration
from trainyard.platform import costs, events, replanning, states
from trainyard.platform.costs.reports import publish_cost_report, record_cost_report
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.queue import preemptions
from trainyard.platform.queue.leases import Locked, fence_rows, lock_rows
from trainyard.platform.queue.notifications import NOTIFY_CHANNEL
from trainyard.platform.states import AttemptOutcome, JobStatus

if TYPE_CHECKING:
    from trainyard.platform.storage import ObjectStore


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Exponential backoff between attempts: base, 2*base, 4*base, ... capped."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))


def _end_attempt(
    session: Session,
    locked: Locked,
    outcome: AttemptOutcome,
    *,
    error_code: str | None,
    error_message: str | None,
    retryable: bool,
    backoff_base: float,
    backoff_cap: float,
    billed_until: datetime | None = None,
    result: dict[str, Any] | None = None,
) -> JobStatus:
    """Close the attempt at `locked.now` and move the job to its next state (one statement);
    returns the job's new status. `result`, when given, becomes the job's."""
    job, attempt, now = locked.job, locked.attempt, locked.now
    src = job.status
    attempt.ended_at = now
    attempt.outcome = outcome
    attempt.error_code = error_code
    attempt.error_message = error_message
    costs.meter(attempt, billed_until or now)
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
        retryable, error_code, error_message = preemptions.limit(
            session, job.id, attempt.id, outcome, retryable, error_code, error_message
        )
        failures = locked.failures + (outcome in states.COUNTS_AS_FAILURE)
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
    if dst == states.QUEUED and src == states.CANCELLING:
        dst = states.CANCELLED
    elif dst == states.QUEUED and job.pause_requested:
        # Paused while this attempt ran: wait as paused; resume queues it from its latest checkpoint.
        dst = states.PAUSED
        msg = f"attempt {attempt.number} {outcome}; job paused"
    job.pause_requested = False
    if error_code:
        info["error_code"] = error_code
    states.check_transition(job.id, src, dst)
    job.status = dst
    _write_end(
        session,
        locked,
        event=(msg, {"from": src, "to": str(dst), **info}, "error" if dst == states.FAILED else "info"),
        notify=dst == states.QUEUED,
        result=result,
    )
    if dst == states.QUEUED:
        # Where the next attempt runs, for jobs with a deadline contract (the others return at once).
        replanning.after_attempt(session, job.id, attempt.id, now)
    return dst


# What an attempt's end writes of its row: how it ended, its ledger line and its metering.
_ENDED_COLUMNS = (
    "ended_at",
    "outcome",
    "error_code",
    "error_message",
    "start_step",
    "start_tokens",
    "end_step",
    "end_tokens",
    "tokens_trained",
    "steps_recomputed",
    "tokens_recomputed",
    "pace_step",
    "pace_at",
    "billable_seconds",
    "cost_usd",
)


def _end_sql(level: str) -> TextClause:
    """The attempt's row, its job's (status, totals over its attempts) and the status event, with
    the notification that wakes the pool's workers when the job is queued again: one statement.
    The job moves only when `moves` (a rescued attempt its job had left behind only closes)."""
    event = events.insert_sql(
        "moved m",
        type=events.STATUS,
        job_id="m.id",
        attempt_id="CAST(:attempt_id AS text)",
        message="CAST(:message AS text)",
        data="CAST(:data AS jsonb)",
        level=level,
    )
    return text(
        f"""
        WITH ended AS (
            UPDATE job_attempts SET {", ".join(f"{c} = :a_{c}" for c in _ENDED_COLUMNS)}
            WHERE id = :attempt_id
            RETURNING job_id
        ), moved AS (
            UPDATE jobs AS j
            SET status = :status, current_attempt_id = NULL, error_code = :error_code,
                error_message = :error_message, pause_requested = :pause_requested,
                run_after = :run_after, result = COALESCE(CAST(:result AS jsonb), j.result),
                updated_at = :now,
                -- Back in line: whatever its last attempt was doing, it waits now.
                progress = CASE WHEN CAST(:requeued AS boolean)
                    THEN COALESCE(j.progress, CAST('{{}}' AS jsonb))
                         || jsonb_build_object('phase', '{states.JobPhase.QUEUED}')
                    ELSE j.progress END,
                finished_at = CASE WHEN CAST(:terminal AS boolean) THEN :now ELSE j.finished_at END,
                cost_usd = t.cost_usd, billable_seconds = t.seconds
            FROM ended e, LATERAL (
                SELECT COALESCE(sum(o.cost_usd), 0) + CAST(:a_cost_usd AS float8) AS cost_usd,
                       COALESCE(sum(o.billable_seconds), 0) + CAST(:a_billable_seconds AS float8) AS seconds
                FROM job_attempts o WHERE o.job_id = e.job_id AND o.id <> :attempt_id
            ) t
            WHERE j.id = e.job_id AND CAST(:moves AS boolean)
            RETURNING j.id, j.pool
        ), event AS ({event})
        SELECT pg_notify('{NOTIFY_CHANNEL}', COALESCE(m.pool, '')) FROM moved m WHERE CAST(:notify AS boolean)
        """
    )


_END_SQL = {level: _end_sql(level) for level in ("info", "error")}


def _write_end(
    session: Session,
    locked: Locked,
    *,
    event: tuple[str, dict[str, Any], str] | None,
    notify: bool = False,
    result: dict[str, Any] | None = None,
) -> None:
    """Write the attempt's end as `locked` now holds it; with `event` (message, data, level) the
    job's too. Nothing else writes these rows meanwhile: `locked` holds their locks."""
    job, attempt = locked.job, locked.attempt
    message, data, level = event or ("", {}, "info")
    params: dict[str, Any] = {f"a_{c}": getattr(attempt, c) for c in _ENDED_COLUMNS}
    params["a_outcome"] = str(attempt.outcome) if attempt.outcome is not None else None
    params.update(
        attempt_id=attempt.id,
        moves=event is not None,
        status=str(job.status),
        error_code=job.error_code,
        error_message=job.error_message,
        pause_requested=job.pause_requested,
        run_after=job.run_after,
        result=json.dumps(result) if result is not None else None,
        now=locked.now,
        terminal=job.status in states.TERMINAL,
        requeued=job.status == states.QUEUED,
        message=message,
        data=json.dumps(data),
        notify=notify,
    )
    session.execute(_END_SQL[level], params)


Lock = Callable[[], Locked | None]
REPORTED = states.TERMINAL | {states.PAUSED}
End = Callable[[Locked], JobStatus | None]


def _settle(session: Session, lock_rows: Lock, end: End, store: ObjectStore | None) -> JobStatus | None:
    """Lock, end and commit; with a store, publish the cost report of that end first.

    `lock_rows` returns the locked job and attempt, or None when there is nothing to end; `end`
    applies the end at `locked.now` and returns the job's new status (None: nothing for the job,
    no report). Raises whatever the store or the database raise, with nothing committed.
    """
    at: datetime | None = None
    published: tuple[dict[str, Any], str] | None = None
    while True:
        locked = lock_rows()
        if locked is None:
            session.rollback()
            return None
        # Each pass ends the attempt at the same instant, so both give the same report.
        at = locked.now = at or locked.now
        dst = end(locked)
        # A job going back to the queue has not ended: its report comes when it does.
        if store is None or dst is None or dst not in REPORTED:
            session.commit()
            return dst
        report = costs.cost_report(session, locked.job.id)
        if published is not None and published[0] == report:
            job = session.get(Job, locked.job.id)
            assert job is not None
            record_cost_report(session, job, locked.attempt.id, report, published[1])
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

    def end(locked: Locked) -> JobStatus:
        if result is not None:
            costs.ledger.record_result(locked.attempt, result)
        return _end_attempt(
            session,
            locked,
            ended,
            error_code=error_code,
            error_message=error_message,
            retryable=retryable,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            result=result,
        )

    dst = _settle(session, lambda: fence_rows(session, attempt_id), end, store)
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
    def lock() -> Locked | None:
        locked = lock_rows(session, attempt_id, skip_locked=True)
        if locked is None or locked.live or locked.attempt.ended_at is not None:
            return None
        return locked

    def end(locked: Locked) -> JobStatus | None:
        job, attempt = locked.job, locked.attempt
        if job.current_attempt_id != attempt.id or job.status not in states.ACTIVE:
            # Its job already moved on without it: close it, nothing else changes.
            attempt.ended_at = attempt.lease_expires_at
            attempt.outcome = AttemptOutcome.LOST
            _write_end(session, locked, event=None)
            return None
        return _end_attempt(
            session,
            locked,
            AttemptOutcome.LOST,
            error_code="lease_expired",
            error_message=f"worker {attempt.worker_id} stopped heartbeating",
            retryable=True,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            # A lost worker is billed up to its last sign of life, not until we noticed.
            billed_until=attempt.heartbeat_at,
        )

    return _settle(session, lock, end, store)
