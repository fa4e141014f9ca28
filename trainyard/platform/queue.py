"""The Postgres-backed job queue: claim, lease, heartbeat, fencing, finish, rescue, notify.

One claim idiom: `FOR UPDATE SKIP LOCKED` in a CTE plus `UPDATE ... RETURNING`, committed at once.
No transaction stays open while a job runs: a running attempt is a row with a lease that its
worker keeps renewing, and every write an attempt makes goes through `fence`, which refuses it
once another attempt owns the job.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from trainyard.platform import costs, states
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt, JobEvent

NOTIFY_CHANNEL = "trainyard_jobs"

# Outcomes that count against `max_attempts`; a graceful hand-back (worker shutdown) does not.
FAILED_OUTCOMES = frozenset({"failed", "crashed", "lost", "preempted"})


@dataclass(frozen=True)
class Claim:
    job_id: str
    attempt_id: str
    attempt_number: int
    spec: dict[str, Any]
    plan: dict[str, Any] | None
    instance_type: str | None
    pool: str | None
    lease_expires_at: datetime


@dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime
    cancel_requested: bool
    # Why the attempt must stop, if it must: "cancelled", "paused" or "budget_exceeded".
    stop_reason: str | None = None


def notify(session: Session, pool: str | None) -> None:
    """Wake listening workers when the enclosing transaction commits."""
    session.execute(text("SELECT pg_notify(:ch, :payload)"), {"ch": NOTIFY_CHANNEL, "payload": pool or ""})


_CLAIM_SQL = text(
    """
    WITH picked AS (
        SELECT j.id FROM jobs j
        JOIN teams t ON t.id = j.team_id
        WHERE j.status = 'queued' AND j.run_after <= now()
          AND (CAST(:pools AS text[]) IS NULL OR j.pool = ANY(CAST(:pools AS text[])))
          -- A team at its concurrent-GPU quota waits; other teams' jobs go ahead of it.
          AND (t.max_concurrent_gpus IS NULL OR COALESCE((j.plan->>'accelerator_count')::int, 0) = 0
               OR COALESCE((j.plan->>'accelerator_count')::int, 0) + (
                   SELECT COALESCE(sum((r.plan->>'accelerator_count')::int), 0) FROM jobs r
                   WHERE r.team_id = j.team_id AND r.status IN ('running', 'cancelling')
               ) <= t.max_concurrent_gpus)
        ORDER BY j.priority DESC, j.seq
        LIMIT :n
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE jobs AS j
    SET status = 'running', attempt_count = j.attempt_count + 1,
        started_at = COALESCE(j.started_at, now()), updated_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.attempt_count, j.spec, j.plan, j.instance_type, j.pool
    """
)


def _pool_room(session: Session, capacity: Mapping[str, int]) -> dict[str, int]:
    """Free slots per pool. Claimers for a pool serialise on an advisory lock held to commit,
    so two of them cannot both take the last slot."""
    room: dict[str, int] = {}
    for pool in sorted(capacity):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"trainyard.pool:{pool}"})
        active = session.scalar(
            text("SELECT count(*) FROM jobs WHERE pool = :p AND status IN ('running', 'cancelling')"),
            {"p": pool},
        )
        room[pool] = max(0, capacity[pool] - int(active or 0))
    return room


def claim(
    session: Session,
    *,
    worker_id: str,
    n: int = 1,
    pools: Iterable[str] | None = None,
    capacity: Mapping[str, int] | None = None,
    lease_seconds: float = 60.0,
) -> list[Claim]:
    """Claim up to `n` queued jobs (highest priority, then oldest) and commit at once.

    `pools` limits the claim to jobs placed in those pools; `capacity` (pool -> max concurrent
    jobs) keeps each pool within its limit across all workers.
    """
    pool_list = list(pools) if pools is not None else None
    rows: list[Any] = []
    if capacity:
        wanted = {p: c for p, c in capacity.items() if pool_list is None or p in pool_list}
        for pool, free in _pool_room(session, wanted).items():
            for _ in range(min(free, n - len(rows))):
                got = session.execute(_CLAIM_SQL, {"n": 1, "pools": [pool]}).all()
                if not got:
                    break
                rows += got
    elif session.scalar(text("SELECT EXISTS (SELECT 1 FROM teams WHERE max_concurrent_gpus IS NOT NULL)")):
        # Quotas are checked against running jobs, so claim one at a time: each statement then
        # sees the jobs this transaction already moved to running.
        for _ in range(n):
            got = session.execute(_CLAIM_SQL, {"n": 1, "pools": pool_list}).all()
            if not got:
                break
            rows += got
    else:
        rows = list(session.execute(_CLAIM_SQL, {"n": n, "pools": pool_list}).all())
    if not rows:
        session.commit()
        return []
    now = session.scalar(select(func.now()))
    assert now is not None
    lease = now + timedelta(seconds=lease_seconds)
    claims: list[Claim] = []
    for job_id, number, spec, plan, instance_type, pool in rows:
        attempt = JobAttempt(
            job_id=job_id,
            number=number,
            worker_id=worker_id,
            instance_type=instance_type,
            spot=bool((plan or {}).get("spot", False)),
            usd_per_hour=float((plan or {}).get("usd_per_hour", 0.0)),
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=lease,
        )
        session.add(attempt)
        session.flush()
        session.execute(
            text("UPDATE jobs SET current_attempt_id = :a WHERE id = :j"), {"a": attempt.id, "j": job_id}
        )
        session.add(
            JobEvent(
                job_id=job_id,
                attempt_id=attempt.id,
                type="status",
                message=f"attempt {number} started on {worker_id}",
                data={"from": "queued", "to": "running", "attempt": number, "worker": worker_id},
            )
        )
        claims.append(Claim(job_id, attempt.id, number, spec, plan, instance_type, pool, lease))
    session.commit()
    return claims


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


def _failures(session: Session, job_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .where(JobAttempt.job_id == job_id, JobAttempt.outcome.in_(FAILED_OUTCOMES))
        )
        or 0
    )


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Exponential backoff between attempts: base, 2*base, 4*base, ... capped."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))


def _end_attempt(
    session: Session,
    job: Job,
    attempt: JobAttempt,
    outcome: str,
    *,
    error_code: str | None,
    error_message: str | None,
    retryable: bool,
    backoff_base: float,
    backoff_cap: float,
    billed_until: datetime | None = None,
) -> str:
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
    info = {"attempt": attempt.number, "outcome": outcome}
    if outcome == "succeeded":
        dst = states.SUCCEEDED
        job.error_code = job.error_message = None
        msg = "job succeeded"
    elif job.cancel_requested or outcome == "cancelled":
        dst = states.CANCELLED
        msg = "job cancelled"
    elif outcome == "handed_back":
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
) -> str:
    """End an attempt (fenced) and commit; returns the job's new status."""
    job, attempt = fence(session, attempt_id)
    if result is not None:
        job.result = result
    dst = _end_attempt(
        session,
        job,
        attempt,
        outcome,
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
            attempt.outcome = "lost"
            continue
        _end_attempt(
            session,
            job,
            attempt,
            "lost",
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


class Listener:
    """LISTEN on the queue channel with its own autocommit connection; polling is the fallback.

    `wait(timeout)` returns True when a notification arrived, False on timeout or if the
    connection broke (the caller simply polls again).
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> bool:
        try:
            conn = self._connect()
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.Error:
            self.close()
            time.sleep(min(timeout, 1.0))
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


# The queue summary below was moved here from the cost allocation module.
from trainyard.platform.auth import Principal, visible_team_id  # noqa: E402


def queue_summary(session: Session, principal: Principal, team: str | None = None) -> dict[str, Any]:
    """Waiting and running jobs by pool, for the caller's view (admins: all teams or `team`)."""
    team_id = visible_team_id(session, principal, team)
    queued, active = states.sql_list((states.QUEUED,)), states.sql_list(states.ACTIVE)
    gpus = costs.queries.plan_number("accelerator_count", checked=True)
    rows = session.execute(
        text(
            f"""
            SELECT j.pool,
                   count(*) FILTER (WHERE j.status IN ({queued})) AS waiting,
                   count(*) FILTER (WHERE j.status IN ({active})) AS running,
                   coalesce(sum({gpus}) FILTER (WHERE j.status IN ({active})), 0) AS gpus_in_use,
                   extract(epoch FROM now() - min(j.created_at) FILTER (WHERE j.status IN ({queued})))
                       AS oldest_waiting_seconds
            FROM jobs j
            WHERE j.status IN ({states.sql_list(states.ACTIVE | {states.QUEUED})})
              AND (CAST(:team_id AS text) IS NULL OR j.team_id = CAST(:team_id AS text))
            GROUP BY j.pool
            ORDER BY j.pool NULLS FIRST
            """
        ),
        {"team_id": team_id},
    ).mappings()
    pools = [
        {
            "pool": r["pool"],
            "waiting": int(r["waiting"]),
            "running": int(r["running"]),
            "gpus_in_use": float(r["gpus_in_use"] or 0),
            "oldest_waiting_seconds": (
                round(float(r["oldest_waiting_seconds"]), 3)
                if r["oldest_waiting_seconds"] is not None
                else None
            ),
        }
        for r in rows
    ]
    return {
        "object": "queue_summary",
        "waiting": sum(p["waiting"] for p in pools),
        "running": sum(p["running"] for p in pools),
        "gpus_in_use": sum(p["gpus_in_use"] for p in pools),
        "pools": pools,
        "as_of": costs.windows.ts(costs.windows.db_now(session)),
    }
