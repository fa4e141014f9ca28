"""The deadline contract, applied to a job as it runs: the options are fixed when it is planned,
and the platform decides again at every interruption and every recorded checkpoint.

At submit (``contract_block``), a job with ``spot: auto`` and a deadline or a budget objective
keeps in its plan the options it could move to: its chosen option, the same type on the other
capacity, and the best few alternatives, each with its price, run length, start-up, restart,
interruption rate and memory plan. Then:

- ``after_attempt``: an attempt ended and the job goes back to the queue (preempted, crashed,
  lost, handed back): the next attempt runs where the contract says.
- ``at_checkpoint``: a checkpoint was recorded; if the contract moves the job, the plan changes at
  once and the running attempt is told to stop at its next heartbeat (``superseded``): it hands
  the job back just after a checkpoint, so almost nothing is lost.

Remaining work is the share of steps after the latest checkpoint, timed at the pace the attempt
measured (its seconds per step, against the estimate for its type; the same correction applies to
the other options). A move is an event with the contract's reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.platform import events
from trainyard.platform.models import Checkpoint, Job, JobAttempt, Team
from trainyard.platform.scheduling.catalog import Catalog
from trainyard.platform.scheduling.deadline_contract import Option, Verdict, decide
from trainyard.platform.scheduling.estimator import Estimate
from trainyard.platform.scheduling.instance_types import InstanceType
from trainyard.platform.scheduling.policies import Decision
from trainyard.platform.spec import JobSpec

MAX_CONTRACT_OPTIONS = 6
MAX_REPLANS_KEPT = 20
# What a move copies from the option into the job's plan: where the next attempt runs and how.
_PLACEMENT = (
    "instance_type",
    "spot",
    "kind",
    "accelerator",
    "accelerator_count",
    "workers",
    "usd_per_hour",
    "on_demand_usd_per_hour",
    "strategy",
    "gradient_checkpointing",
    "micro_batch_size",
    "gradient_accumulation_steps",
)


def applies(spec: JobSpec) -> bool:
    """Jobs the contract re-plans: spot left to the platform, and a deadline or a budget objective."""
    policy = spec.policy
    return policy.spot == "auto" and (policy.deadline is not None or policy.objective == "budget")


def contract_block(spec: JobSpec, decision: Decision, catalog: Catalog) -> dict[str, Any] | None:
    """The options the job may move to, for its plan; None when the contract does not apply:
    the chosen option, the same type on the other capacity, the best alternatives by the job's
    objective, and the fastest of them."""
    if not applies(spec):
        return None
    chosen, alternatives = decision.chosen, decision.alternatives
    picked = [chosen]

    def add(e: Estimate | None) -> None:
        if e is not None and all(e is not p for p in picked):
            picked.append(e)

    add(next((a for a in alternatives if a.instance_type == chosen.instance_type), None))
    for a in alternatives:
        if len(picked) >= MAX_CONTRACT_OPTIONS - 1:
            break
        add(a)
    add(min(alternatives, key=lambda a: a.seconds, default=None))
    return {
        "every_steps": spec.checkpoint.every_steps,
        "options": [_option_entry(e, catalog[e.instance_type]) for e in picked],
    }


def _option_entry(e: Estimate, itype: InstanceType) -> dict[str, Any]:
    return {
        "instance_type": e.instance_type,
        "spot": e.spot,
        "kind": itype.kind,
        "accelerator": e.accelerator,
        # For all the instances a sweep holds at once, as `Planner.plan_dict` has them: the
        # ledger bills and the quota counts a moved job by these.
        "accelerator_count": itype.accelerator_count * itype.nodes * e.concurrent_trials,
        "workers": itype.workers,
        "usd_per_hour": e.usd_per_hour,
        "on_demand_usd_per_hour": itype.on_demand_usd_per_hour * e.concurrent_trials,
        "strategy": e.strategy,
        "gradient_checkpointing": e.gradient_checkpointing,
        "micro_batch_size": e.micro_batch_size,
        "gradient_accumulation_steps": e.gradient_accumulation_steps,
        "steps": e.steps,
        "compute_seconds": round(e.compute_seconds, 3),
        "startup_seconds": round(e.startup_seconds, 3),
        "restart_seconds": round(e.restart_seconds, 3),
        "interruptions_per_hour": e.interruptions_per_hour,
    }


# --- the hooks ----------------------------------------------------------------------------------


def after_attempt(session: Session, job_id: str, attempt_id: str, now: datetime) -> None:
    """An attempt ended and its job went back to the queue (written, under its lock): choose
    where its next attempt runs."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or "contract" not in (job.plan or {}):
        return
    attempt = session.get(JobAttempt, attempt_id, populate_existing=True)
    if attempt is not None:
        _replan(session, job, attempt, now, running=False)


def at_checkpoint(session: Session, job: Job, attempt: JobAttempt, now: datetime | None = None) -> None:
    """A checkpoint was recorded: re-plan; a move stops the running attempt (``superseded``)."""
    if "contract" not in (job.plan or {}):
        return
    now = now or session.scalar(select(func.now()))
    assert now is not None
    _replan(session, job, attempt, now, running=True)


def superseded(job: Job, attempt: JobAttempt) -> bool:
    """Whether the job's plan has moved off the capacity this attempt runs on."""
    plan = job.plan or {}
    if "replans" not in plan:
        return False
    return plan.get("instance_type") != attempt.instance_type or bool(plan.get("spot")) != attempt.spot


# --- the decision -------------------------------------------------------------------------------


def _replan(session: Session, job: Job, attempt: JobAttempt, now: datetime, *, running: bool) -> None:
    plan = job.plan or {}
    contract = plan.get("contract")
    if not isinstance(contract, dict) or not contract.get("options"):
        return
    policy = (job.spec or {}).get("policy") or {}
    objective = "budget" if policy.get("objective") == "budget" else "deadline"
    deadline = _deadline(policy.get("deadline"))
    if objective == "deadline" and deadline is None:
        return
    entries: list[dict[str, Any]] = [e for e in contract["options"] if isinstance(e, dict)]
    current = _entry(entries, plan.get("instance_type"), bool(plan.get("spot")))
    if current is None:
        return
    # Never onto more accelerators than the team's quota allows: the next claim would fail the
    # job as one that can never run.
    quota = session.scalar(select(Team.max_concurrent_gpus).where(Team.id == job.team_id))
    if quota is not None:
        entries = [e for e in entries if e is current or float(e.get("accelerator_count") or 0) <= quota]
    left = _fraction_left(session, job, current)
    if left is None:
        return
    ratio = _pace_ratio(attempt, current, now if running else attempt.heartbeat_at)
    every = float(contract.get("every_steps") or 0)

    def option(entry: dict[str, Any], *, here: bool) -> Option:
        seconds = float(entry["compute_seconds"]) * ratio
        per_step = seconds / max(1.0, float(entry.get("steps") or 1))
        return Option(
            instance_type=str(entry["instance_type"]),
            spot=bool(entry.get("spot")),
            usd_per_hour=float(entry["usd_per_hour"]),
            seconds=seconds * left,
            startup_seconds=0.0 if (here and running) else float(entry.get("startup_seconds") or 0.0),
            interruptions_per_hour=float(entry.get("interruptions_per_hour") or 0.0),
            restart_seconds=float(entry.get("restart_seconds") or 0.0),
            checkpoint_interval_seconds=every * per_step,
        )

    from trainyard.settings import get_settings

    verdict = decide(
        option(current, here=True),
        [option(e, here=False) for e in entries if e is not current],
        objective=objective,
        confidence=get_settings().deadline_confidence,
        seconds_left=(deadline - now).total_seconds() if deadline is not None else None,
        budget_left_usd=(
            float(policy["max_cost_usd"]) - float(job.cost_usd or 0.0)
            if objective == "budget" and policy.get("max_cost_usd") is not None
            else None
        ),
    )
    if verdict.stay:
        return
    chosen = _entry(entries, verdict.chosen.option.instance_type, verdict.chosen.option.spot)
    assert chosen is not None
    _move(session, job, attempt, plan, chosen, verdict, now, "checkpoint" if running else "interruption")


def _move(
    session: Session,
    job: Job,
    attempt: JobAttempt,
    plan: dict[str, Any],
    chosen: dict[str, Any],
    verdict: Verdict,
    now: datetime,
    trigger: str,
) -> None:
    before = {"instance_type": plan.get("instance_type"), "spot": bool(plan.get("spot"))}
    after = {"instance_type": chosen["instance_type"], "spot": bool(chosen.get("spot"))}
    record = {
        "at": now.isoformat(),
        "trigger": trigger,
        "from": before,
        "to": after,
        "reason": verdict.reason,
    }
    replans = [*(plan.get("replans") or []), record][-MAX_REPLANS_KEPT:]
    job.plan = {
        **plan,
        **{k: chosen.get(k) for k in _PLACEMENT},
        "reason": verdict.reason,
        "replans": replans,
    }
    # One pool per instance type: the next attempt waits where that type runs.
    job.instance_type = job.pool = str(chosen["instance_type"])
    events.add(
        session,
        job.id,
        events.MESSAGE,
        verdict.reason,
        attempt_id=attempt.id,
        data={"replan": {**verdict.to_dict(), "trigger": trigger, "from": before, "to": after}},
    )


def _entry(entries: list[dict[str, Any]], instance_type: Any, spot: bool) -> dict[str, Any] | None:
    return next(
        (e for e in entries if e.get("instance_type") == instance_type and bool(e.get("spot")) == spot), None
    )


def _deadline(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _fraction_left(session: Session, job: Job, current: Mapping[str, Any]) -> float | None:
    """The share of the run after the job's latest recorded checkpoint (what the next attempt
    resumes from); None when the run's length is not known."""
    total = (job.progress or {}).get("total_steps")
    if not isinstance(total, int | float) or isinstance(total, bool) or total <= 0:
        total = current.get("steps")
    if not isinstance(total, int | float) or total <= 0:
        return None
    step = session.scalar(select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job.id)) or 0
    return max(0.0, float(total) - float(step)) / float(total)


def _pace_ratio(attempt: JobAttempt, current: Mapping[str, Any], until: datetime | None) -> float:
    """Measured seconds per step over the estimate's, for the attempt's own type; 1 without a pace."""
    if (
        attempt.pace_at is None
        or attempt.pace_step is None
        or until is None
        or attempt.instance_type != current.get("instance_type")
    ):
        return 1.0
    steps = (attempt.end_step or 0) - attempt.pace_step
    seconds = (until - attempt.pace_at).total_seconds()
    estimated = float(current.get("compute_seconds") or 0) / max(1.0, float(current.get("steps") or 1))
    if steps < 1 or seconds <= 0 or estimated <= 0:
        return 1.0
    ratio = seconds / steps / estimated
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0


__all__ = ["after_attempt", "applies", "at_checkpoint", "contract_block", "superseded"]
