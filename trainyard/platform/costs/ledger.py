"""The attempt ledger: each attempt row says what it is billed on and what it did, so that every
cost figure comes from attempts alone, never from a job's plan as it stands now.

- At claim (`record_terms`, and its SQL form `terms_sql` that the claim statement inserts with):
  instance type, spot or not, price per hour, on-demand price per hour, accelerator and count,
  and the furthest the job's earlier attempts got (`prior_*`).
- When it resumes (`record_start`): the checkpoint's step and cumulative tokens.
- As it reports progress (`record_progress`): the furthest step and cumulative tokens it got to,
  and its first progress (where its training pace is measured from).
- Throughout, `settle` derives what the queries read: the tokens it trained (a delta, never the
  cumulative count restored from a checkpoint) and how much of that redid work an earlier
  attempt had already done (steps and tokens recomputed).

The figures an attempt contributes (the functions below `settle`) are the ones the allocation
SQL computes per attempt (`queries.attempts_sql`); a property test holds the two to each other,
as another holds `terms_sql` to `record_terms`.

The functions take any `Line`: an ORM `JobAttempt`, or the plain row the queue ends an attempt
with (`queue.leases.AttemptRow`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.models import Checkpoint, JobAttempt


class Line(Protocol):
    """What the functions below read and write of an attempt's ledger line."""

    job_id: str
    start_step: int
    start_tokens: int
    end_step: int
    end_tokens: int
    prior_step: int
    prior_tokens: int
    tokens_trained: int
    steps_recomputed: int
    tokens_recomputed: int
    pace_step: int | None
    pace_at: datetime | None


def plan_number(plan: Mapping[str, Any] | None, name: str) -> float | None:
    """A finite, non-negative number from the plan, or None (absent, not a number, hand-edited)."""
    value = (plan or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def record_terms(
    attempt: JobAttempt, plan: Mapping[str, Any] | None, instance_type: str | None, prior: tuple[int, int]
) -> None:
    """Open the attempt's line: what it is billed on, as the job's plan says at claim time, and
    the furthest (step, cumulative tokens) the job's earlier attempts reached. It has trained
    nothing yet; `record_start` says where it resumes."""
    plan = plan or {}
    attempt.start_step = attempt.start_tokens = attempt.end_step = attempt.end_tokens = 0
    attempt.instance_type = instance_type or (
        plan["instance_type"] if isinstance(plan.get("instance_type"), str) else None
    )
    attempt.spot = plan.get("spot") is True
    attempt.usd_per_hour = plan_number(plan, "usd_per_hour") or 0.0
    on_demand = plan_number(plan, "on_demand_usd_per_hour")
    # On demand, the price paid is the on-demand price; on spot, 0 says none is known.
    attempt.on_demand_usd_per_hour = on_demand or (0.0 if attempt.spot else attempt.usd_per_hour)
    accelerator = plan.get("accelerator")
    attempt.accelerator = accelerator[:64] if isinstance(accelerator, str) else None
    attempt.accelerator_count = min(int(plan_number(plan, "accelerator_count") or 0), 1_000_000)
    attempt.prior_step, attempt.prior_tokens = prior
    settle(attempt)


def furthest(session: Session, job_id: str) -> tuple[int, int]:
    """The furthest step and cumulative token count any attempt of the job has reached."""
    step, tokens = session.execute(
        select(func.max(JobAttempt.end_step), func.max(JobAttempt.end_tokens)).where(
            JobAttempt.job_id == job_id
        )
    ).one()
    return int(step or 0), int(tokens or 0)


# The largest JSON number taken as a price or count: beyond it a double overflows, where Python
# reads infinity (not finite, so `plan_number` gives None).
_MAX_NUMBER = "1e308"


def _plan_number_sql(plan: str, name: str) -> str:
    """`plan_number` in SQL, over the jsonb expression `plan`."""
    value = f"({plan} -> '{name}')"
    return (
        f"(CASE WHEN jsonb_typeof({value}) = 'number' AND {value}::numeric >= 0 "
        f"AND {value}::numeric < {_MAX_NUMBER} THEN {value}::float8 END)"
    )


def terms_sql(plan: str, instance_type: str, prior_step: str, prior_tokens: str) -> dict[str, str]:
    """`record_terms` in SQL: column -> expression, for the statement that inserts the attempt at
    claim. The arguments are SQL expressions (the job's plan, its instance type, and the furthest
    step and tokens of its earlier attempts, NULL when it has none)."""
    spot = f"COALESCE(({plan} -> 'spot') = 'true'::jsonb, false)"
    usd = f"COALESCE({_plan_number_sql(plan, 'usd_per_hour')}, 0)"
    on_demand = _plan_number_sql(plan, "on_demand_usd_per_hour")
    accelerator = f"({plan} -> 'accelerator')"
    itype = f"({plan} -> 'instance_type')"
    count = f"COALESCE({_plan_number_sql(plan, 'accelerator_count')}, 0)"
    # A new attempt has trained nothing: what `settle` derives from these is 0 too.
    zero = "0"
    return {
        "start_step": zero,
        "start_tokens": zero,
        "end_step": zero,
        "end_tokens": zero,
        "instance_type": (
            f"COALESCE(NULLIF({instance_type}, ''), "
            f"CASE WHEN jsonb_typeof({itype}) = 'string' THEN {plan} ->> 'instance_type' END)"
        ),
        "spot": spot,
        "usd_per_hour": usd,
        "on_demand_usd_per_hour": f"COALESCE(NULLIF({on_demand}, 0), CASE WHEN {spot} THEN 0 ELSE {usd} END)",
        "accelerator": (
            f"CASE WHEN jsonb_typeof({accelerator}) = 'string' THEN left({plan} ->> 'accelerator', 64) END"
        ),
        "accelerator_count": f"CAST(LEAST(floor({count}), 1000000) AS int)",
        "prior_step": f"COALESCE({prior_step}, 0)",
        "prior_tokens": f"COALESCE({prior_tokens}, 0)",
        "tokens_trained": zero,
        "steps_recomputed": zero,
        "tokens_recomputed": zero,
    }


def furthest_sql(job_id: str) -> str:
    """`furthest` in SQL: a subquery of one row (step, tokens) for the job `job_id` names."""
    return (
        "(SELECT max(p.end_step) AS step, max(p.end_tokens) AS tokens "
        f"FROM job_attempts p WHERE p.job_id = {job_id})"
    )


def checkpoint_tokens(session: Session, attempt: Line, step: int) -> int:
    """The cumulative tokens at the job's checkpoint of `step` (see `start_tokens`)."""
    metrics = session.scalar(
        select(Checkpoint.metrics).where(
            Checkpoint.job_id == attempt.job_id, Checkpoint.trial == "", Checkpoint.step == step
        )
    )
    return start_tokens(attempt, step, (metrics or {}).get("tokens_seen"))


def start_tokens(attempt: Line, step: int, seen: Any) -> int:
    """The tokens trained by `step`: `seen`, the count the trainer recorded with the checkpoint,
    else in proportion to the steps of the furthest earlier attempt (never past its tokens, so
    nothing before the resume is counted as new)."""
    if _count(seen) is not None:
        return _count(seen) or 0
    prior_step, prior_tokens = attempt.prior_step or 0, attempt.prior_tokens or 0
    if prior_step > 0:
        return min(prior_tokens, round(prior_tokens * step / prior_step))
    return 0


def record_start(attempt: Line, step: int, tokens: int) -> None:
    """The attempt resumes from a checkpoint at `step`, `tokens` trained by then."""
    attempt.start_step = max(0, int(step))
    attempt.start_tokens = max(0, int(tokens))
    attempt.end_step = max(attempt.end_step or 0, attempt.start_step)
    attempt.end_tokens = max(attempt.end_tokens or 0, attempt.start_tokens)
    settle(attempt)


def record_progress(
    attempt: Line, *, step: Any = None, tokens: Any = None, now: datetime | None = None
) -> None:
    """Progress the attempt reported: its step and cumulative tokens (both only grow)."""
    if _count(step) is not None:
        attempt.end_step = max(attempt.end_step or 0, _count(step) or 0)
        if attempt.pace_at is None and now is not None:
            attempt.pace_step, attempt.pace_at = attempt.end_step, now
    if _count(tokens) is not None:
        attempt.end_tokens = max(attempt.end_tokens or 0, _count(tokens) or 0)
    settle(attempt)


def record_result(attempt: Line, result: Mapping[str, Any] | None) -> None:
    """The trainer's own count at the end of a (single) run, exact where heartbeats lag."""
    if not result or result.get("trials"):
        return
    tokens, this_attempt = _count(result.get("tokens_trained")), _count(result.get("tokens_this_attempt"))
    start_step = _count(result.get("start_step"))
    if tokens is None or this_attempt is None or start_step is None:
        return
    attempt.start_step = start_step
    attempt.start_tokens = max(0, tokens - this_attempt)
    record_progress(attempt, step=result.get("steps"), tokens=tokens)


def settle(attempt: Line) -> None:
    """Derive what this attempt trained and how much of it redid earlier attempts' work."""
    start_step, end_step = attempt.start_step or 0, attempt.end_step or 0
    start_tokens, end_tokens = attempt.start_tokens or 0, attempt.end_tokens or 0
    attempt.tokens_trained = max(0, end_tokens - start_tokens)
    attempt.steps_recomputed = max(0, min(end_step, attempt.prior_step or 0) - start_step)
    attempt.tokens_recomputed = max(0, min(end_tokens, attempt.prior_tokens or 0) - start_tokens)


def count(value: Any) -> int | None:
    """A finite, non-negative whole count from a reported value, or None."""
    return _count(value)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0, int(value))


# --- what an attempt contributes --------------------------------------------------------------


def new_tokens(attempt: JobAttempt) -> int:
    """Tokens that took the job past where its earlier attempts had got: summed over a job's
    attempts, the furthest any of them reached, however often it resumed. It is what the
    attempt trained less what it redid; where an earlier attempt got further than it reported
    (its last heartbeat lagged, and its checkpoint carried no count), the resumed attempt
    carries those tokens, so the job's total is still right."""
    return max(0, (attempt.end_tokens or 0) - (attempt.prior_tokens or 0))


def recomputed_fraction(attempt: JobAttempt) -> float:
    """The share of the attempt's steps that redid work an earlier attempt had done."""
    done = (attempt.end_step or 0) - (attempt.start_step or 0)
    return min(1.0, (attempt.steps_recomputed or 0) / done) if done > 0 else 0.0


def startup_fraction(attempt: JobAttempt) -> float:
    """The share of the attempt's billed time before it trained: provisioning, the model load,
    Ray's start, up to its first progress. An attempt that trained nothing spent all of it
    starting; one whose progress came only with its result or its checkpoints, none."""
    billed = attempt.billable_seconds or 0.0
    if billed <= 0:
        return 0.0
    if attempt.pace_at is None:
        return 0.0 if trained(attempt) else 1.0
    waited = (attempt.pace_at - attempt.started_at).total_seconds()
    return min(1.0, max(0.0, waited / billed))


def trained(attempt: JobAttempt) -> bool:
    """Whether the attempt got past where it resumed, in steps or in tokens."""
    return (attempt.end_step or 0) > (attempt.start_step or 0) or (attempt.tokens_trained or 0) > 0


def recomputed_usd(attempt: JobAttempt) -> float:
    """The recomputed steps' share of what the attempt spent on steps (after its start-up)."""
    cost = max(0.0, attempt.cost_usd or 0.0)
    return cost * (1.0 - startup_fraction(attempt)) * recomputed_fraction(attempt)


def waste_usd(attempt: JobAttempt) -> float:
    """Dollars that bought nothing: all of a failed, crashed, lost or preempted attempt (its
    hand-back keeps a checkpoint, so a pause is not waste), else its recomputed steps."""
    if attempt.outcome in states.WASTED:
        return max(0.0, attempt.cost_usd or 0.0)
    return recomputed_usd(attempt)


GOODPUT_PARTS = ("productive_usd", "startup_usd", "checkpoint_usd", "recomputed_usd", "lost_usd")


def goodput_parts(attempt: JobAttempt) -> dict[str, float]:
    """The attempt's dollars split by what they bought; the parts add up to its cost.

    Lost: all of a failed, crashed, lost or preempted attempt. Otherwise start-up (before its
    first progress), recomputation (steps an earlier attempt had done) and productive training.
    Checkpoint writes are inside the training time: no attempt reports how long they take yet.
    """
    cost = max(0.0, attempt.cost_usd or 0.0)
    parts = dict.fromkeys(GOODPUT_PARTS, 0.0)
    if attempt.outcome in states.WASTED:
        parts["lost_usd"] = cost
        return parts
    parts["startup_usd"] = cost * startup_fraction(attempt)
    parts["recomputed_usd"] = recomputed_usd(attempt)
    parts["productive_usd"] = max(0.0, cost - parts["startup_usd"] - parts["recomputed_usd"])
    return parts


def on_demand_usd(attempt: JobAttempt) -> float | None:
    """What its billable time would have cost on demand; None when no on-demand price is known."""
    rate = attempt.on_demand_usd_per_hour or 0.0
    return (attempt.billable_seconds or 0.0) / 3600.0 * rate if rate > 0 else None


def spot_savings_usd(attempt: JobAttempt) -> float:
    """On-demand dollars less what a spot attempt paid (0 on demand, or with no on-demand price)."""
    on_demand = on_demand_usd(attempt)
    return on_demand - (attempt.cost_usd or 0.0) if attempt.spot and on_demand is not None else 0.0


def gpu_hours(attempt: JobAttempt) -> float:
    return (attempt.billable_seconds or 0.0) / 3600.0 * (attempt.accelerator_count or 0)
