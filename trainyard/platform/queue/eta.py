"""When a queued job should start: the claim's rules played forward over the jobs' estimates.

Pure arithmetic over figures read elsewhere (`queue.answers`), in seconds from now. A pool's
slots free up as its running jobs end (each by what is left of its estimate); the claim then
hands each free slot to the first job in claim order that it may take (priority, then age; a job
in backoff is skipped until its time). A team quota frees as the team's running jobs end.

Estimates, not promises: a run ends when it ends, and the jobs of other teams ahead of this one
are taken as claimable whatever their own team's quota says. Unknown figures (a plan without an
estimate) are infinite: a start that depends on one is unknown (None).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

# Jobs ahead that the simulation plays one by one; those past it are added at the mean pace.
MAX_SIMULATED = 5000
# The least a running job is given to free its slot: its end still saves the model and writes its
# cost report, and one past its estimate has shown the estimate short, not that it is done.
MIN_REMAINING_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Ahead:
    """A queued job that the claim takes before the one asked about."""

    seconds: float  # its estimated run; inf when unknown
    not_before: float = 0.0  # seconds until its backoff ends


def running_remaining(
    *,
    estimated_seconds: float | None,
    started_at: datetime | None,
    now: datetime,
    step: int | None = None,
    total_steps: int | None = None,
    pace_step: int | None = None,
    pace_at: datetime | None = None,
    end_step: int | None = None,
    min_pace_steps: int = 10,
    min_pace_seconds: float = 60.0,
) -> float:
    """Seconds until a running job frees its slot.

    By its training pace once the attempt has shown enough steps (the rule a budget projection
    trusts, `costs.PaceRule`); else by the share of steps done, against its estimate; else its
    estimate less the attempt's time so far. Never below `MIN_REMAINING_SECONDS`.
    """
    if (
        total_steps
        and pace_at is not None
        and pace_step is not None
        and end_step is not None
        and end_step - pace_step >= max(1, min_pace_steps)
    ):
        seconds = (now - pace_at).total_seconds()
        if seconds >= min_pace_seconds:
            return max(MIN_REMAINING_SECONDS, (total_steps - end_step) * seconds / (end_step - pace_step))
    if estimated_seconds is None:
        return math.inf
    if total_steps and step and 0 < step <= total_steps:
        return max(MIN_REMAINING_SECONDS, estimated_seconds * (1 - step / total_steps))
    elapsed = (now - started_at).total_seconds() if started_at is not None else 0.0
    return max(MIN_REMAINING_SECONDS, estimated_seconds - elapsed)


def slot_times(capacity: int, running: Sequence[float]) -> list[float]:
    """When each of a pool's `capacity` slots is next free. With more jobs running than slots
    (capacity was lowered), a slot frees only once the running count drops below capacity."""
    if capacity < 1:
        return []
    ordered = sorted(running)
    return ([0.0] * max(0, capacity - len(ordered)) + ordered)[-capacity:]


def pool_start(
    capacity: int,
    running: Sequence[float],
    ahead: Sequence[Ahead],
    *,
    not_before: float = 0.0,
    more_ahead: int = 0,
) -> float | None:
    """Seconds until the claim gives the job a slot in its pool: `running` are the remaining
    seconds of its running jobs, `ahead` the queued jobs before it in claim order, `more_ahead`
    queued jobs before it that were not read (taken at the mean pace of those that were)."""
    heap = slot_times(capacity, running)
    if not heap:
        return None
    heapq.heapify(heap)
    pending = list(ahead)
    known = [a.seconds for a in pending if math.isfinite(a.seconds)]
    mean = sum(known) / len(known) if known else math.inf
    extra = more_ahead + max(0, len(pending) - MAX_SIMULATED)
    played = min(extra, MAX_SIMULATED)
    pending = pending[:MAX_SIMULATED] + [Ahead(mean)] * played
    # Past what is played one by one, the rest of the line passes at `capacity` jobs per mean run.
    tail = (extra - played) * mean / capacity if extra > played else 0.0
    pending.append(Ahead(-1.0, not_before))  # the job itself, last in line
    while pending:
        t = heapq.heappop(heap)
        if not math.isfinite(t):
            return None
        index = next((i for i, p in enumerate(pending) if p.not_before <= t), None)
        if index is None:
            # The slot idles until the first job in line comes out of its backoff.
            t = min(p.not_before for p in pending)
            index = next(i for i, p in enumerate(pending) if p.not_before <= t)
        job = pending.pop(index)
        if job.seconds < 0:
            start = t + tail
            return start if math.isfinite(start) else None
        heapq.heappush(heap, t + job.seconds)
    return None  # not reached: the job itself is always in line


def quota_start(quota: int | None, need: float, team_running: Sequence[tuple[float, float]]) -> float | None:
    """Seconds until the team's running jobs leave room in its `quota` for `need` accelerators;
    `team_running` holds each running job's (accelerators, remaining seconds). None: it never
    fits (it needs more than the quota) or a job it waits for has no estimate."""
    if quota is None or need <= 0:
        return 0.0
    if need > quota:
        return None
    held = sum(n for n, _ in team_running)
    if held + need <= quota:
        return 0.0
    for n, remaining in sorted(team_running, key=lambda r: r[1]):
        held -= n
        if held + need <= quota:
            return remaining if math.isfinite(remaining) else None
    return None
