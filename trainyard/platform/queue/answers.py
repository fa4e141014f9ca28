"""Queue answers: where a waiting job stands in its pool, when it should start, why it waits,
and which other pool would start it sooner, at what cost and finish time.

Read from one snapshot of the queue (`Snapshot.read`: the running jobs, the queued jobs ahead in
each pool, the team's quota and budget) and played forward by `queue.eta`. The figures of another
pool come from the plan's `pool_options`, which planning wrote with the job's other estimates
(`Planner.pool_options`), so a read never estimates a run again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from trainyard.money import format_usd
from trainyard.platform import states
from trainyard.platform.auth import Principal, visible_team_id
from trainyard.platform.costs.metering import PaceRule
from trainyard.platform.costs.windows import ts
from trainyard.platform.deployment import Deployment
from trainyard.platform.errors import InvalidRequest
from trainyard.platform.models import Job, Team
from trainyard.platform.queue import eta
from trainyard.platform.queue.reasons import PRECEDENCE, WaitReason
from trainyard.platform.queue.snapshot import Snapshot, claim_key, number
from trainyard.platform.scheduling import format_duration

MAX_ALTERNATIVES = 3
# Under this, a start is "now" and two finish times are the same.
NOW_SECONDS = 60.0


@dataclass(frozen=True)
class Alternative:
    instance_type: str
    spot: bool
    start_seconds: float
    run_seconds: float
    finish_seconds: float
    sooner_seconds: float | None  # how much sooner it finishes than where it is; None: unknown there
    cost_usd: float
    extra_usd: float
    meets_deadline: bool | None
    summary: str

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "spot": self.spot,
            "pool": self.instance_type,
            "starts_in_seconds": round(self.start_seconds, 1),
            "estimated_start_at": ts(now + timedelta(seconds=self.start_seconds)),
            "estimated_seconds": round(self.run_seconds, 1),
            "estimated_finish_at": ts(now + timedelta(seconds=self.finish_seconds)),
            "finishes_sooner_by_seconds": None
            if self.sooner_seconds is None
            else round(self.sooner_seconds, 1),
            "estimated_cost_usd": round(self.cost_usd, 6),
            "extra_cost_usd": round(self.extra_usd, 6),
            "meets_deadline": self.meets_deadline,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class QueueAnswer:
    job_id: str
    pool: str | None
    position: int | None  # 1: the next its pool's claim takes
    reason: WaitReason
    reasons: tuple[WaitReason, ...]
    message: str
    not_before: datetime | None
    start_seconds: float | None
    run_seconds: float | None
    alternatives: tuple[Alternative, ...]
    now: datetime

    def to_dict(self) -> dict[str, Any]:
        start, run, now = self.start_seconds, self.run_seconds, self.now
        return {
            "object": "job.queue",
            "pool": self.pool,
            "position": self.position,
            "reason": str(self.reason),
            "reasons": [str(r) for r in self.reasons],
            "message": self.message,
            "not_before": ts(self.not_before) if self.not_before is not None else None,
            "eta_seconds": None if start is None else round(start, 1),
            "estimated_start_at": None if start is None else ts(now + timedelta(seconds=start)),
            "estimated_finish_at": (
                None if start is None or run is None else ts(now + timedelta(seconds=start + run))
            ),
            "alternatives": [a.to_dict(now) for a in self.alternatives],
            "as_of": ts(now),
        }


def _options(job: Job, deployment: Deployment) -> list[dict[str, Any]]:
    """Each pool's best option for the job, as planning wrote it. A plan from before it wrote
    them offers what its `alternatives` name ("g6.xlarge" or "g6.xlarge spot")."""
    plan = job.plan or {}
    listed = plan.get("pool_options")
    if isinstance(listed, list):
        return [o for o in listed if isinstance(o, dict) and isinstance(o.get("instance_type"), str)]
    out = []
    for alt in plan.get("alternatives") or []:
        option = str((alt or {}).get("option") or "")
        name, spot = option.removesuffix(" spot"), option.endswith(" spot")
        itype = deployment.catalog.get(name)
        if itype is None or number(alt, "estimated_seconds") is None:
            continue
        out.append(
            {
                "instance_type": name,
                "spot": spot,
                "accelerator_count": itype.accelerator_count * itype.nodes,
                "estimated_seconds": alt["estimated_seconds"],
                "estimated_cost_usd": alt.get("estimated_cost_usd") or 0.0,
            }
        )
    return out


def _later(start: float | None, *bounds: float | None) -> float | None:
    if start is None or any(b is None for b in bounds):
        return None
    return max([start, *(b for b in bounds if b is not None)])


def _summary(label: str, start: float, finish: float, sooner: float | None, extra: float) -> str:
    starts = "starts now" if start < NOW_SECONDS else f"starts in {format_duration(start)}"
    if sooner is None:
        # Where it is, it has no start to compare with.
        finishes = f"finishes in {format_duration(finish)}"
    elif abs(sooner) < NOW_SECONDS:
        finishes = "finishes at about the same time"
    else:
        finishes = f"finishes {format_duration(abs(sooner))} {'sooner' if sooner > 0 else 'later'}"
    # Small sums are the rule for small jobs: any difference shows, at format_usd's precision.
    cost = "same cost" if abs(extra) < 1e-9 else ("+" if extra > 0 else "-") + format_usd(abs(extra))
    return f"on {label}: {starts}, {finishes}, {cost}"


def answer(
    session: Session,
    job: Job,
    deployment: Deployment,
    snapshot: Snapshot | None = None,
    *,
    pace: PaceRule | None = None,
) -> QueueAnswer | None:
    """The queue answer of a queued or paused job (None for any other), from `snapshot` when the
    caller answers several jobs at once; `pace` as `Snapshot.read` takes it."""
    if job.status not in WAITING:
        return None
    key = claim_key(job)
    snap = snapshot or Snapshot.read(session, deployment, key, [job.pool] if job.pool else [], pace)
    now, capacity = snap.now, deployment.capacity
    plan = job.plan or {}
    run = number(plan, "estimated_seconds")
    if job.status == states.PAUSED:
        message = "paused: it waits until it is resumed, then queues again in its pool"
        reason = WaitReason.PAUSED
        return QueueAnswer(job.id, job.pool, None, reason, (reason,), message, None, None, run, (), now)
    wait = max(0.0, (job.run_after - now).total_seconds()) if job.run_after else 0.0
    team = session.get(Team, job.team_id)
    quota = team.max_concurrent_gpus if team is not None else None
    team_running = snap.team_running(job.team_id)
    need = number(plan, "accelerator_count") or 0.0

    bounds: dict[WaitReason, float | None] = {}
    position: int | None = None
    here: float | None = None
    notes: list[str] = []
    if job.pool is None or job.pool not in capacity:
        bounds[WaitReason.POOL_UNAVAILABLE] = None
        notes.append(
            f"no pool of this deployment runs {job.pool or 'its instance type'} "
            f"(pools: {', '.join(sorted(capacity))}): move it to one"
        )
    else:
        ahead, more = snap.ahead(job.pool, key)
        position = len(ahead) + more + 1
        running = snap.pool_running(job.pool)
        slot = eta.pool_start(capacity[job.pool], running, ahead, more_ahead=more)
        if slot is None or slot > 0 or len(running) >= capacity[job.pool]:
            bounds[WaitReason.POOL_FULL] = slot
            line = f", {position - 1} queued ahead of it" if position > 1 else ""
            notes.append(f"pool {job.pool} is full ({len(running)} of {capacity[job.pool]} running{line})")
        if wait > 0:
            bounds[WaitReason.BACKOFF] = wait
            notes.append(f"retry not before {ts(job.run_after)}")
        quota_wait = eta.quota_start(quota, need, team_running)
        if quota_wait is None or quota_wait > 0:
            bounds[WaitReason.TEAM_QUOTA] = quota_wait
            held = sum(n for n, _ in team_running)
            notes.append(
                f"its team holds {held:g} of its {quota} GPUs (max_concurrent_gpus) and it needs {need:g}"
            )
        here = _later(
            eta.pool_start(capacity[job.pool], running, ahead, not_before=wait, more_ahead=more), quota_wait
        )
    if not bounds:
        reason = WaitReason.AWAITING_WORKER
        reasons: tuple[WaitReason, ...] = (reason,)
        notes.append(f"its pool has a free slot: a worker of pool {job.pool} claims it at its next poll")
    else:
        reasons = tuple(r for r in PRECEDENCE if r in bounds)
        # The reason is what holds it longest (an unknown end holds longest of all).
        reason = max(
            reasons, key=lambda r: (math.inf if bounds[r] is None else bounds[r], -PRECEDENCE.index(r))
        )
    alternatives = _alternatives(job, deployment, snap, here, wait, quota, team_running, team)
    message = "; ".join(notes)
    not_before = job.run_after if wait > 0 else None
    return QueueAnswer(
        job.id, job.pool, position, reason, reasons, message, not_before, here, run, alternatives, now
    )


def _alternatives(
    job: Job,
    deployment: Deployment,
    snap: Snapshot,
    here: float | None,
    wait: float,
    quota: int | None,
    team_running: Sequence[tuple[float, float]],
    team: Team | None,
) -> tuple[Alternative, ...]:
    """Up to three other pools where the job would start sooner, soonest finish first; none the
    team's budget could not take (a move there would be refused)."""
    plan = job.plan or {}
    run, cost = number(plan, "estimated_seconds"), number(plan, "estimated_cost_usd") or 0.0
    finish_here = None if here is None or run is None else here + run
    available = snap.budget_available(team) if team is not None else None
    found: list[Alternative] = []
    for option in _options(job, deployment):
        pool = option["instance_type"]
        seconds = number(option, "estimated_seconds")
        if pool == job.pool or pool not in deployment.capacity or seconds is None:
            continue
        need = number(option, "accelerator_count") or 0.0
        ahead, more = snap.ahead(pool, claim_key(job))
        slot = eta.pool_start(
            deployment.capacity[pool], snap.pool_running(pool), ahead, not_before=wait, more_ahead=more
        )
        start = _later(slot, eta.quota_start(quota, need, team_running))
        if start is None or (here is not None and start >= here - 1.0):
            continue
        extra = (number(option, "estimated_cost_usd") or 0.0) - cost
        if available is not None and extra > 0 and extra > available:
            continue
        finish = start + seconds
        sooner = None if finish_here is None else finish_here - finish
        spot = bool(option.get("spot"))
        label = f"{pool} spot" if spot else pool
        found.append(
            Alternative(
                pool,
                spot,
                start,
                seconds,
                finish,
                sooner,
                cost + extra,
                extra,
                option.get("meets_deadline"),
                _summary(label, start, finish, sooner, extra),
            )
        )
    found.sort(key=lambda a: (a.finish_seconds, a.extra_usd))
    return tuple(found[:MAX_ALTERNATIVES])


def answers(
    session: Session, jobs: Sequence[Job], deployment: Deployment, *, pace: PaceRule | None = None
) -> dict[str, QueueAnswer]:
    """Answers for many jobs from one snapshot, read up to the last of them in claim order."""
    waiting = [j for j in jobs if j.status in WAITING]
    if not waiting:
        return {}
    upto = max(claim_key(j) for j in waiting)
    snap = Snapshot.read(session, deployment, upto, [j.pool for j in waiting if j.pool], pace)
    out = {}
    for job in waiting:
        got = answer(session, job, deployment, snap)
        if got is not None:
            out[job.id] = got
    return out


MAX_PAGE = 100
WAITING = (states.QUEUED, states.PAUSED)


def list_waiting(
    session: Session,
    principal: Principal,
    deployment: Deployment,
    *,
    team: str | None = None,
    pool: str | None = None,
    after: str | None = None,
    limit: int = 20,
    order: str = "asc",
    pace: PaceRule | None = None,
) -> tuple[list[tuple[Job, QueueAnswer]], bool]:
    """The caller's queued and paused jobs (admins: every team's, or `team`'s), by pool and then
    in claim order (`order="desc"`: the last in line first), each with its answer;
    keyset-paginated by `after` (a job id)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    team_id = visible_team_id(session, principal, team)
    line = tuple_(func.coalesce(Job.pool, ""), -Job.priority, Job.seq)
    query = select(Job).where(Job.status.in_(WAITING))
    if team_id is not None:
        query = query.where(Job.team_id == team_id)
    if pool:
        query = query.where(Job.pool == pool)
    if after is not None:
        cursor = session.scalar(query.where(Job.id == after))
        if cursor is None:
            raise InvalidRequest(f"no waiting job {after!r} to page after", param="after")
        at = tuple_(cursor.pool or "", -cursor.priority, cursor.seq)
        query = query.where(line > at if order == "asc" else line < at)
    pool_key = func.coalesce(Job.pool, "")
    keys: tuple[Any, ...] = (pool_key, Job.priority.desc(), Job.seq)
    if order == "desc":
        keys = (pool_key.desc(), Job.priority.asc(), Job.seq.desc())
    rows = list(session.scalars(query.order_by(*keys).limit(limit + 1)))
    page = rows[:limit]
    found = answers(session, page, deployment, pace=pace)
    return [(job, found[job.id]) for job in page if job.id in found], len(rows) > limit
