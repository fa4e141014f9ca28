"""Claiming queued jobs: one statement picks them (`FOR UPDATE SKIP LOCKED`), starts their
attempts with the ledger's claim-time terms and writes their events; then one commit.

A claim locks, before it picks, what the picking must count: each pool with a capacity limit
(an advisory lock per pool, held to commit, so two claimers cannot both take the last slot), then
each team with a GPU quota that has a job it may pick (`quotas.lock_quota_teams`). Where no team
with a quota has a job waiting, which the claim statement checks itself, it needs no team locks:
the usual claim is that statement and its commit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from trainyard.platform import events, states
from trainyard.platform.costs import ledger
from trainyard.platform.models import new_id
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


_READY = f"j.status = '{states.QUEUED}' AND j.run_after <= now()"
_IN_POOLS = " AND j.pool = ANY(CAST(:pools AS text[]))"
_TERMS = ledger.terms_sql("c.plan", "c.instance_type", "prior.step", "prior.tokens")
_EVENT = events.insert_sql(
    "attempt a",
    type=events.STATUS,
    job_id="a.job_id",
    attempt_id="a.id",
    message="'attempt ' || a.number || ' started on ' || CAST(:worker AS text)",
    data=(
        f"jsonb_build_object('from', '{states.QUEUED}', 'to', '{states.RUNNING}', "
        "'attempt', a.number, 'worker', CAST(:worker AS text))"
    ),
)


@functools.cache
def _claim_sql(n: int, in_pools: bool, guarded: bool) -> TextClause:
    """The claim statement for up to `n` jobs (in `:pools`, if `in_pools`).

    `open`: whether the pick may go ahead without team locks. When `guarded`, only if no team
    with a quota has a job claimable now (else nothing is picked, and the caller locks those
    teams first); otherwise always, and the jobs of teams with a quota are picked only among
    `:quota_teams`, those the caller locked. `n` and the variant are spelled in the text, so the
    prepared statement's generic plan walks the claim-order index as a planned one does, and the
    statement is not planned again on every claim.
    """
    claimable = _READY + (_IN_POOLS if in_pools else "")
    guard = (
        f"""NOT EXISTS (SELECT 1 FROM teams WHERE max_concurrent_gpus IS NOT NULL)
               OR NOT EXISTS (
                   SELECT 1 FROM jobs j JOIN teams t ON t.id = j.team_id
                   WHERE {claimable} AND t.max_concurrent_gpus IS NOT NULL
               )"""
        if guarded
        else "true"
    )
    return text(
        f"""
    WITH open AS MATERIALIZED (
        SELECT {guard} AS open
    ), picked AS (
        SELECT j.id FROM jobs j
        WHERE {claimable} AND (SELECT open FROM open)
          -- A team at its concurrent-GPU quota waits; other teams' jobs go ahead of it. A team
          -- with a quota is counted only under its lock (quotas.lock_quota_teams).
          -- A scalar subquery, not a join: the planner then walks the claim-order index and
          -- stops at the first jobs that pass, where a join would sort every queued job.
          AND (
              SELECT t.max_concurrent_gpus IS NULL OR (
                  j.team_id = ANY(CAST(:quota_teams AS text[]))
                  AND (COALESCE((j.plan->>'accelerator_count')::int, 0) = 0
                       OR COALESCE((j.plan->>'accelerator_count')::int, 0) + (
                           SELECT COALESCE(sum((r.plan->>'accelerator_count')::int), 0) FROM jobs r
                           WHERE r.team_id = j.team_id AND r.status IN ({sql_list(states.ACTIVE)})
                       ) <= t.max_concurrent_gpus)
              )
              FROM teams t WHERE t.id = j.team_id
          )
        ORDER BY j.priority DESC, j.seq
        LIMIT {int(n)}
        FOR UPDATE OF j SKIP LOCKED
    ), numbered AS (
        SELECT id, (CAST(:attempt_ids AS text[]))[row_number() OVER ()] AS attempt_id FROM picked
    ), claimed AS (
        UPDATE jobs AS j
        SET status = '{states.RUNNING}', attempt_count = j.attempt_count + 1,
            started_at = COALESCE(j.started_at, now()), updated_at = now(),
            current_attempt_id = numbered.attempt_id,
            progress = COALESCE(j.progress, CAST('{{}}' AS jsonb))
                       || jsonb_build_object('phase', '{states.JobPhase.STARTING_WORKERS}')
        FROM numbered WHERE j.id = numbered.id
        RETURNING j.id, j.attempt_count, j.spec, j.plan, j.instance_type, j.pool, j.current_attempt_id
    ), attempt AS (
        -- Billed on the plan as it is now, for the whole attempt, whatever dispatch does later.
        INSERT INTO job_attempts (id, job_id, number, worker_id, started_at, heartbeat_at,
                                  lease_expires_at, {", ".join(_TERMS)})
        SELECT c.current_attempt_id, c.id, c.attempt_count, CAST(:worker AS text), now(), now(),
               now() + make_interval(secs => CAST(:lease_seconds AS float8)), {", ".join(_TERMS.values())}
        FROM claimed c CROSS JOIN LATERAL {ledger.furthest_sql("c.id")} AS prior
        RETURNING id, job_id, number, lease_expires_at
    ), event AS ({_EVENT})
    SELECT o.open, c.id, a.id, a.number, c.spec, c.plan, c.instance_type, c.pool, a.lease_expires_at
    FROM open o
    LEFT JOIN (claimed c JOIN attempt a ON a.id = c.current_attempt_id) ON true
    """
    )


_POOL_LOCKS_SQL = text(
    # OFFSET 0 keeps the sort below the locking: the locks are taken in key order.
    "SELECT pg_advisory_xact_lock(hashtext(k)) "
    "FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k OFFSET 0) AS keys"
)
_POOL_ACTIVE_SQL = text(
    f"SELECT pool, count(*) FROM jobs WHERE pool = ANY(CAST(:pools AS text[])) "
    f"AND status IN ({sql_list(states.ACTIVE)}) GROUP BY pool"
)


def _pool_room(session: Session, capacity: Mapping[str, int]) -> dict[str, int]:
    """Free slots per pool. Claimers for a pool serialise on an advisory lock held to commit,
    so two of them cannot both take the last slot; the count comes after the locks."""
    pools = sorted(capacity)
    session.execute(_POOL_LOCKS_SQL, {"keys": [f"trainyard.pool:{pool}" for pool in pools]})
    active: dict[str, int] = dict(session.execute(_POOL_ACTIVE_SQL, {"pools": pools}).tuples().all())
    return {pool: max(0, capacity[pool] - int(active.get(pool, 0))) for pool in pools}


class _Claiming:
    """One claim transaction. Team locks are taken only once a team with a quota turns out to
    have a job to pick (`lock_pools`: the pools whose teams are locked then)."""

    def __init__(
        self, session: Session, worker_id: str, lease_seconds: float, lock_pools: Sequence[str] | None
    ):
        self.session = session
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.lock_pools = lock_pools
        self.teams: list[str] | None = None  # locked; None: not yet needed

    def take(self, n: int, pools: Sequence[str] | None) -> list[Claim]:
        if n <= 0:
            return []
        if self.teams is None:
            got = self._run(n, pools, guarded=True, teams=[])
            if got is not None:
                return got
            self.teams = quotas.lock_quota_teams(self.session, self.lock_pools)
        if not self.teams:
            return self._run(n, pools, guarded=False, teams=[]) or []
        # Quotas are checked against running jobs, so claim one at a time: each statement then
        # sees the jobs this transaction already moved to running.
        claims: list[Claim] = []
        while len(claims) < n:
            got = self._run(1, pools, guarded=False, teams=self.teams)
            if not got:
                break
            claims += got
        return claims

    def _run(
        self, n: int, pools: Sequence[str] | None, *, guarded: bool, teams: list[str]
    ) -> list[Claim] | None:
        """Claim up to `n` in one statement; None when `guarded` and a team with a quota has a
        job to pick (nothing is claimed then)."""
        rows = self.session.execute(
            _claim_sql(n, pools is not None, guarded),
            {
                "pools": list(pools) if pools is not None else [],
                "quota_teams": teams,
                "attempt_ids": [new_id("att") for _ in range(n)],
                "worker": self.worker_id,
                "lease_seconds": float(self.lease_seconds),
            },
        ).all()
        if not rows[0][0]:
            return None
        return [
            Claim(job_id, attempt_id, number, spec, plan, itype, pool, lease)
            for _, job_id, attempt_id, number, spec, plan, itype, pool, lease in rows
            if attempt_id is not None
        ]


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
    if capacity:
        wanted = {p: c for p, c in capacity.items() if pool_list is None or p in pool_list}
        room = _pool_room(session, wanted)
        claiming = _Claiming(session, worker_id, lease_seconds, sorted(wanted))
        claims: list[Claim] = []
        while len(claims) < n:
            open_pools = [pool for pool, free in room.items() if free > 0]
            if not open_pools:
                break
            # Across pools, one at a time: the best job of all the pools with room comes first,
            # as priority says, not the pool whose name sorts first.
            want = min(room[open_pools[0]], n - len(claims)) if len(open_pools) == 1 else 1
            got = claiming.take(want, open_pools)
            if not got:
                break
            for c in got:
                if c.pool in room:
                    room[c.pool] -= 1
            claims += got
    else:
        claims = _Claiming(session, worker_id, lease_seconds, pool_list).take(n, pool_list)
    session.commit()
    return claims
