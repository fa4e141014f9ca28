"""Why a queued job waits: the one vocabulary of queue answers (`queue.answers`).

Each reason is a condition the claim itself checks (`queue.claims`), so a reason is never a
guess about something the claim ignores. A team's budget is not among them: it refuses new work
at create (`budget_exhausted`), and never holds a job already queued.
"""

from __future__ import annotations

from enum import StrEnum


class WaitReason(StrEnum):
    # Its pool's `max_concurrent` slots are taken, by running jobs or by queued jobs ahead of it.
    POOL_FULL = "pool_full"
    # Its team's running jobs hold so many accelerators that its own would pass the team's
    # `max_concurrent_gpus`.
    TEAM_QUOTA = "team_quota"
    # A failed attempt's retry is not claimed before `not_before`.
    BACKOFF = "backoff"
    # Paused: it waits until it is resumed.
    PAUSED = "paused"
    # No pool of this deployment runs its instance type, so no worker will claim it where it is.
    POOL_UNAVAILABLE = "pool_unavailable"
    # Nothing holds it: its pool has a slot for it and a worker claims it at its next poll.
    AWAITING_WORKER = "awaiting_worker"


WAIT_REASONS: tuple[WaitReason, ...] = tuple(WaitReason)
# When several hold a job at once, the one that ends last is its reason; ties go in this order.
PRECEDENCE: tuple[WaitReason, ...] = (
    WaitReason.PAUSED,
    WaitReason.POOL_UNAVAILABLE,
    WaitReason.BACKOFF,
    WaitReason.TEAM_QUOTA,
    WaitReason.POOL_FULL,
    WaitReason.AWAITING_WORKER,
)
