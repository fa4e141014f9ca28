"""A snapshot of the queue for answering waiting jobs: the running jobs with what is left of
each, the queued jobs ahead in each pool (read up to a bound, counted beyond it), and the team
budgets asked about, all as of one database instant."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.costs.budgets import budget_status
from trainyard.platform.costs.metering import PaceRule
from trainyard.platform.costs.windows import db_now
from trainyard.platform.deployment import Deployment
from trainyard.platform.models import Job, JobAttempt, Team
from trainyard.platform.queue import eta

# Queued jobs read per pool; the line past them is played at their mean pace (`eta.pool_start`).
MAX_READ_AHEAD = 500

Key = tuple[int, int]  # claim order: (-priority, seq), smallest first


def claim_key(job: Job) -> Key:
    return (-job.priority, job.seq)


def number(plan: Mapping[str, Any] | None, name: str) -> float | None:
    value = (plan or {}).get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class _Running:
    pool: str | None
    team_id: str
    need: float
    remaining: float


@dataclass(frozen=True, slots=True)
class _Queued:
    key: Key
    ahead: eta.Ahead


_AHEAD_SQL = text(
    f"""
    SELECT pool, priority, seq, not_before, seconds, n FROM (
        SELECT j.pool, j.priority, j.seq,
               greatest(extract(epoch FROM j.run_after - now()), 0) AS not_before,
               CASE WHEN jsonb_typeof(j.plan -> 'estimated_seconds') = 'number'
                    THEN (j.plan ->> 'estimated_seconds')::float8 END AS seconds,
               row_number() OVER (PARTITION BY j.pool ORDER BY j.priority DESC, j.seq) AS rn,
               count(*) OVER (PARTITION BY j.pool) AS n
        FROM jobs j
        WHERE j.status = '{states.QUEUED}' AND j.pool = ANY(CAST(:pools AS text[]))
          AND (-j.priority, j.seq) < (:p, :s)
    ) x WHERE rn <= :cap ORDER BY pool, rn
    """
)

_COUNT_AHEAD_SQL = text(
    f"SELECT count(*) FROM jobs j WHERE j.status = '{states.QUEUED}' AND j.pool = :pool "
    "AND (-j.priority, j.seq) < (:p, :s)"
)


@dataclass
class Snapshot:
    """The queue as of `now`, for answering the jobs ranked at or before `upto` in every pool."""

    now: datetime
    deployment: Deployment
    running: list[_Running]
    queued: dict[str, list[_Queued]]
    # Queued jobs ahead of `upto` per pool, read or not.
    counts: dict[str, int]
    upto: Key
    _session: Session = field(repr=False)
    _budgets: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def read(
        cls,
        session: Session,
        deployment: Deployment,
        upto: Key,
        pools: Iterable[str] = (),
        pace: PaceRule | None = None,
    ) -> Snapshot:
        """`pace` says when a running job's training pace is trusted (`PaceRule.from_settings`;
        default: the settings' defaults)."""
        now = db_now(session)
        names = sorted(set(deployment.capacity) | {p for p in pools if p})
        rule = pace or PaceRule()
        rows = session.execute(
            select(Job.pool, Job.team_id, Job.plan, Job.progress, Job.started_at, JobAttempt)
            .outerjoin(JobAttempt, JobAttempt.id == Job.current_attempt_id)
            .where(Job.status.in_(sorted(states.ACTIVE)))
        ).all()
        running = []
        for pool, team_id, plan, progress, job_started, attempt in rows:
            progress = progress or {}
            remaining = eta.running_remaining(
                estimated_seconds=number(plan, "estimated_seconds"),
                started_at=attempt.started_at if attempt is not None else job_started,
                now=now,
                step=_int(progress.get("step")),
                total_steps=_int(progress.get("total_steps")),
                pace_step=attempt.pace_step if attempt is not None else None,
                pace_at=attempt.pace_at if attempt is not None else None,
                end_step=attempt.end_step if attempt is not None else None,
                min_pace_steps=rule.min_steps,
                min_pace_seconds=rule.min_seconds,
            )
            running.append(_Running(pool, team_id, number(plan, "accelerator_count") or 0.0, remaining))
        queued: dict[str, list[_Queued]] = {name: [] for name in names}
        counts = dict.fromkeys(names, 0)
        params = {"pools": names, "p": upto[0], "s": upto[1], "cap": MAX_READ_AHEAD}
        for r in session.execute(_AHEAD_SQL, params):
            seconds = float(r.seconds) if r.seconds is not None else math.inf
            queued[r.pool].append(_Queued((-r.priority, r.seq), eta.Ahead(seconds, float(r.not_before))))
            counts[r.pool] = int(r.n)
        return cls(now, deployment, running, queued, counts, upto, session)

    def ahead(self, pool: str, key: Key) -> tuple[list[eta.Ahead], int]:
        """The queued jobs the claim takes before a job of claim order `key` (at most `upto`) in
        `pool`: those read, and how many more there are."""
        rows = self.queued.get(pool, [])
        read = [q.ahead for q in rows if q.key < key]
        if self.counts.get(pool, 0) <= len(rows) or len(read) < len(rows):
            # All read, or some read row comes after it: everything ahead of it was read.
            return read, 0
        total = self.counts[pool] if key == self.upto else self._count(pool, key)
        return read, max(0, total - len(read))

    def budget_available(self, team: Team) -> float | None:
        """What the team's budget has left after its queued and running jobs (None: no budget)."""
        if team.monthly_budget_usd is None:
            return None
        if team.id not in self._budgets:
            self._budgets[team.id] = float(budget_status(self._session, team.id, self.now)["available"])
        return self._budgets[team.id]

    def _count(self, pool: str, key: Key) -> int:
        return int(self._session.scalar(_COUNT_AHEAD_SQL, {"pool": pool, "p": key[0], "s": key[1]}) or 0)

    def pool_running(self, pool: str) -> list[float]:
        return [r.remaining for r in self.running if r.pool == pool]

    def team_running(self, team_id: str) -> list[tuple[float, float]]:
        return [(r.need, r.remaining) for r in self.running if r.team_id == team_id and r.need > 0]


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
