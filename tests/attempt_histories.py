"""Random attempt histories for the ledger's property tests (hypothesis strategies).

A history is one job run as the queue runs it, written through the ledger functions the queue
calls (`costs.ledger`): each attempt is claimed on whatever plan the job has then (dispatch may
change it between attempts), resumes from the job's latest checkpoint, reports progress that may
lag behind what it trained, writes checkpoints, and ends handed back (a pause or shutdown, after
a checkpoint), preempted, crashed, lost (rescued hours later, billed to its last heartbeat),
succeeded, or is still running (billed to its last heartbeat, however long ago that was).
Tokens per step vary, so token counts and step counts do not move in proportion.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from trainyard.platform.costs import ledger
from trainyard.platform.models import JobAttempt
from trainyard.platform.states import AttemptOutcome

# (instance type, accelerator, count, on-demand $/h, spot $/h)
INSTANCE_TYPES = (
    ("g5.xlarge", "A10G", 1, 1.006, 0.45),
    ("g5.12xlarge", "A10G", 4, 5.672, 2.10),
    ("p4d.24xlarge", "A100-40GB", 8, 32.77, 11.57),
    ("c7i.2xlarge", None, 0, 0.357, 0.14),
)
# How an attempt that the job outlives ends (a failure for the job's own fault ends the job).
ENDINGS = (AttemptOutcome.HANDED_BACK, AttemptOutcome.PREEMPTED, AttemptOutcome.CRASHED, AttemptOutcome.LOST)
# The job's status once an attempt ended so (the history may stop after any attempt).
STATUS_AFTER = {
    AttemptOutcome.HANDED_BACK: "paused",
    AttemptOutcome.PREEMPTED: "queued",
    AttemptOutcome.CRASHED: "queued",
    AttemptOutcome.LOST: "queued",
    AttemptOutcome.FAILED: "failed",
    AttemptOutcome.SUCCEEDED: "succeeded",
    None: "running",
}


def plan(instance: int, spot: bool) -> dict[str, Any]:
    name, accel, count, od, spot_rate = INSTANCE_TYPES[instance]
    return {
        "instance_type": name,
        "accelerator": accel,
        "accelerator_count": count,
        "spot": spot,
        "usd_per_hour": spot_rate if spot else od,
        "on_demand_usd_per_hour": od,
        "estimated_cost_usd": 5.0,
    }


@dataclass
class History:
    plan: dict[str, Any]  # the job's plan as it stands after its last attempt
    status: str
    total_steps: int
    cumulative: list[int]  # tokens trained by the end of each step (index 0: none)
    attempts: list[JobAttempt] = field(default_factory=list)
    end: datetime | None = None  # when the last thing happened (a rescue comes late)

    @property
    def furthest_tokens(self) -> int:
        """What the job has trained: the furthest any attempt got, in tokens."""
        return max((a.end_tokens for a in self.attempts), default=0)


def _hours(draw: st.DrawFn, lo: float, hi: float) -> timedelta:
    return timedelta(hours=draw(st.floats(lo, hi, allow_nan=False)))


@st.composite
def histories(draw: st.DrawFn, start: datetime, *, checkpoint_tokens: bool | None = None) -> History:
    """One job's attempts from `start`. `checkpoint_tokens` says whether checkpoints record the
    tokens trained by then (drawn when None; without them the ledger estimates)."""
    total = draw(st.integers(5, 300))
    per_step = draw(st.lists(st.integers(1, 4096), min_size=total, max_size=total))
    cumulative = [0, *itertools.accumulate(per_step)]
    with_tokens = draw(st.booleans()) if checkpoint_tokens is None else checkpoint_tokens
    n_attempts = draw(st.integers(1, 6))
    checkpoints: dict[int, int | None] = {}
    history = History(plan={}, status="queued", total_steps=total, cumulative=cumulative)
    clock = start
    for number in range(1, n_attempts + 1):
        last = number == n_attempts
        the_plan = plan(draw(st.integers(0, len(INSTANCE_TYPES) - 1)), draw(st.booleans()))
        history.plan = the_plan
        clock += _hours(draw, 0, 3)  # waiting in the queue
        attempt = JobAttempt(number=number, worker_id=f"w{number}", started_at=clock)
        prior = (
            max((a.end_step for a in history.attempts), default=0),
            max((a.end_tokens for a in history.attempts), default=0),
        )
        ledger.record_terms(attempt, the_plan, the_plan["instance_type"], prior)
        resume = max(checkpoints, default=0)
        if resume:
            # As `ledger.checkpoint_tokens` finds it: the checkpoint's count, else an estimate.
            ledger.record_start(attempt, resume, ledger.start_tokens(attempt, resume, checkpoints[resume]))
        outcome: AttemptOutcome | None
        if last:
            outcome = draw(st.sampled_from([AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, None, *ENDINGS]))
        else:
            outcome = draw(st.sampled_from(ENDINGS))
        reach = total if outcome == AttemptOutcome.SUCCEEDED else draw(st.integers(resume, total))
        # Heartbeats lag: the last progress the queue heard of may be behind the reach.
        heard = draw(st.integers(resume, reach))
        startup, training = _hours(draw, 0, 0.5), _hours(draw, 0.001, 8)
        if heard > resume:
            ledger.record_progress(
                attempt, step=resume + 1, tokens=cumulative[resume + 1], now=clock + startup
            )
            ledger.record_progress(attempt, step=heard, tokens=cumulative[heard])
        every = draw(st.integers(1, 60))
        saved = [s for s in range(resume + 1, reach + 1) if s % every == 0]
        if outcome == AttemptOutcome.HANDED_BACK and reach > resume:
            saved.append(reach)  # a hand-back checkpoints first
        for step in saved:
            # `attempts.record_checkpoint`: a checkpoint is progress too.
            tokens = cumulative[step] if with_tokens else None
            checkpoints[step] = tokens
            ledger.record_progress(attempt, step=step, tokens=tokens)
        if outcome == AttemptOutcome.SUCCEEDED:
            # The trainer's own count, as `queue.finish` records it from the result.
            ledger.record_result(
                attempt,
                {
                    "steps": total,
                    "start_step": resume,
                    "tokens_trained": cumulative[total],
                    "tokens_this_attempt": cumulative[total] - cumulative[resume],
                },
            )
        heartbeat = clock + startup + training
        attempt.heartbeat_at = heartbeat
        attempt.lease_expires_at = heartbeat + timedelta(minutes=1)
        attempt.outcome = None if outcome is None else str(outcome)
        if outcome is None:
            attempt.ended_at = None
        elif outcome == AttemptOutcome.LOST:
            # Rescued long after the worker went quiet; billed to its last heartbeat all the same.
            attempt.ended_at = heartbeat + timedelta(minutes=1) + _hours(draw, 0, 24)
        else:
            attempt.ended_at = heartbeat
        # `costs.meter`: from the start to the last sign of life.
        attempt.billable_seconds = (heartbeat - attempt.started_at).total_seconds()
        attempt.cost_usd = attempt.billable_seconds / 3600.0 * attempt.usd_per_hour
        history.attempts.append(attempt)
        history.status = STATUS_AFTER[outcome]
        clock = attempt.ended_at or heartbeat
        history.end = clock
    return history
