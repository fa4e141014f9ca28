"""Claiming queued jobs: one `FOR UPDATE SKIP LOCKED` statement, an attempt row per job, one commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from trainyard.platform import events, states
from trainyard.platform.costs import ledger
from trainyard.platform.models import JobAttempt
from trainyard.platform.queue import quotas
from trainyard.platform.states import sql_list


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


_CLAIM_SQL = text(
    f"""
    WITH picked AS (
        SELECT j.id FROM jobs j
        JOIN teams t ON t.id = j.team_id
        WHERE j.status = '{states.QUEUED}' AND j.run_after <= now()
          AND (CAST(:pools AS text[]) IS NULL OR j.pool = ANY(CAST(:pools AS text[])))
          -- A team at its concurrent-GPU quota waits; other teams' jobs go ahead of it. A team
          -- with a quota is counted only under its lock (quotas.lock_quota_teams).
          AND (t.max_concurrent_gpus IS NULL OR j.team_id = ANY(CAST(:quota_teams AS text[])))
          AND (t.max_concurrent_gpus IS NULL OR COALESCE((j.plan->>'accelerator_count')::int, 0) = 0
               OR COALESCE((j.plan->>'accelerator_count')::int, 0) + (
                   SELECT COALESCE(sum((r.plan->>'accelerator_count')::int), 0) FROM jobs r
                   WHERE r.team_id = j.team_id AND r.status IN ({sql_list(states.ACTIVE)})
               ) <= t.max_concurrent_gpus)
        ORDER BY j.priority DESC, j.seq
        LIMIT :n
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE jobs AS j
    SET status = '{states.RUNNING}', attempt_count = j.attempt_count + 1,
        started_at = COALESCE(j.started_at, now()), updated_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.attempt_count, j.spec, j.plan, j.instance_type, j.pool
    """
)

_POOL_ACTIVE_SQL = text(
    f"SELECT count(*) FROM jobs WHERE pool = :p AND status IN ({sql_list(states.ACTIVE)})"
)


def _pool_room(session: Session, capacity: Mapping[str, int]) -> dict[str, int]:
    """Free slots per pool. Claimers for a pool serialise on an advisory lock held to commit,
    so two of them cannot both take the last slot."""
    room: dict[str, int] = {}
    for pool in sorted(capacity):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"trainyard.pool:{pool}"})
        active = session.scalar(_POOL_ACTIVE_SQL, {"p": pool})
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
        room = _pool_room(session, wanted)
        teams = quotas.lock_quota_teams(session, sorted(wanted))
        for pool, free in room.items():
            for _ in range(min(free, n - len(rows))):
                got = session.execute(_CLAIM_SQL, {"n": 1, "pools": [pool], "quota_teams": teams}).all()
                if not got:
                    break
                rows += got
    elif teams := quotas.lock_quota_teams(session, pool_list):
        # Quotas are checked against running jobs, so claim one at a time: each statement then
        # sees the jobs this transaction already moved to running.
        for _ in range(n):
            got = session.execute(_CLAIM_SQL, {"n": 1, "pools": pool_list, "quota_teams": teams}).all()
            if not got:
                break
            rows += got
    else:
        rows = list(session.execute(_CLAIM_SQL, {"n": n, "pools": pool_list, "quota_teams": []}).all())
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
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=lease,
        )
        # Billed on the plan as it is now, for the whole attempt, whatever dispatch does later.
        ledger.record_terms(attempt, plan, instance_type, ledger.furthest(session, job_id))
        session.add(attempt)
        session.flush()
        session.execute(
            text("UPDATE jobs SET current_attempt_id = :a WHERE id = :j"), {"a": attempt.id, "j": job_id}
        )
        events.add(
            session,
            job_id,
            events.STATUS,
            f"attempt {number} started on {worker_id}",
            attempt_id=attempt.id,
            data={
                "from": str(states.QUEUED),
                "to": str(states.RUNNING),
                "attempt": number,
                "worker": worker_id,
            },
        )
        claims.append(Claim(job_id, attempt.id, number, spec, plan, instance_type, pool, lease))
    session.commit()
    return claims
