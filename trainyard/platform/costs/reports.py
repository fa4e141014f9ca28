"""The cost report written next to a run's model at its end (`jobs/{id}/cost_report.json`).

It is in the store before the job turns `succeeded` (or any other end): the queue builds it from
the attempt's end as that end will be committed, publishes it, then commits the same end and
records where the report is (`record_cost_report`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.durations import format_duration
from trainyard.money import format_usd
from trainyard.platform import events, states
from trainyard.platform.costs import ledger
from trainyard.platform.models import Job, JobAttempt, Team
from trainyard.platform.storage.layout import cost_report_key

if TYPE_CHECKING:
    from trainyard.platform.storage import ObjectStore


def cost_report(session: Session, job_id: str) -> dict[str, Any]:
    """The report written to `jobs/{id}/cost_report.json`; the same figures the database holds."""
    job = session.get(Job, job_id)
    if job is None:
        raise KeyError(job_id)
    team = session.get(Team, job.team_id)
    attempts = session.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
    ).all()
    plan = job.plan or {}
    total_usd = sum(a.cost_usd for a in attempts)
    # Each attempt against its own on-demand price, as /v1/costs has it.
    priced = any(ledger.on_demand_usd(a) is not None for a in attempts)
    savings = sum(ledger.spot_savings_usd(a) for a in attempts)
    # What the job trained: each attempt's new tokens, never a checkpoint's tokens counted again.
    tokens = sum(ledger.new_tokens(a) for a in attempts)
    estimated = plan.get("estimated_cost_usd")
    return {
        "object": "cost_report",
        "job_id": job.id,
        "team": team.name if team else job.team_id,
        "status": job.status,
        "instance_type": job.instance_type,
        "accelerator": plan.get("accelerator"),
        "accelerator_count": plan.get("accelerator_count"),
        "spot": bool(plan.get("spot", False)),
        "usd_per_hour": plan.get("usd_per_hour"),
        "attempts": [
            {
                "attempt": a.number,
                "attempt_id": a.id,
                "worker": a.worker_id,
                "started_at": a.started_at.isoformat(),
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                "billable_seconds": round(a.billable_seconds, 3),
                "instance_type": a.instance_type,
                "spot": a.spot,
                "capacity": "spot" if a.spot else "on_demand",
                "usd_per_hour": a.usd_per_hour,
                "on_demand_usd_per_hour": a.on_demand_usd_per_hour or None,
                "accelerator_count": a.accelerator_count,
                "cost_usd": round(a.cost_usd, 6),
                "outcome": a.outcome or states.RUNNING,
                "start_step": a.start_step,
                "end_step": a.end_step,
                "tokens_trained": a.tokens_trained,
                "steps_recomputed": a.steps_recomputed,
                "tokens_recomputed": a.tokens_recomputed,
                "wasted_usd": round(ledger.waste_usd(a), 6),
            }
            for a in attempts
        ],
        "totals": {
            "billable_seconds": round(sum(a.billable_seconds for a in attempts), 3),
            "gpu_hours": round(sum(ledger.gpu_hours(a) for a in attempts), 6),
            "cost_usd": round(total_usd, 6),
            "wasted_usd": round(sum(ledger.waste_usd(a) for a in attempts), 6),
            "recomputed_usd": round(sum(ledger.recomputed_usd(a) for a in attempts), 6),
            "steps_recomputed": sum(a.steps_recomputed for a in attempts),
            "tokens_trained": tokens,
            "usd_per_million_tokens": round(total_usd / tokens * 1e6, 6) if tokens else None,
            "on_demand_equivalent_usd": round(total_usd + savings, 6) if priced else None,
            "spot_savings_usd": round(savings, 6) if priced else None,
            **_against_all_on_demand(attempts, total_usd),
        },
        # Where the deadline contract moved the job as it ran, and why.
        "replans": list(plan.get("replans") or []),
        "goodput": goodput(attempts),
        "estimate": {
            "estimated_cost_usd": estimated,
            "estimated_seconds": plan.get("estimated_seconds"),
            "cost_error": round((total_usd - estimated) / estimated, 4) if estimated else None,
        },
    }


def all_on_demand_usd(attempts: Sequence[JobAttempt]) -> float | None:
    """What the job's surviving work would have cost on demand, uninterrupted: one start-up, then
    each attempt's steps that the run kept, at the attempt's own seconds per step and its type's
    on-demand price. None when an attempt has no on-demand price.

    An attempt's steps survive up to where the run next resumed from (the earliest start of any
    later attempt): work past the checkpoint an interruption fell back to was done again, and is
    counted once, in the attempt that did it last. A lost last attempt keeps nothing.
    """
    ordered = sorted(attempts, key=lambda a: a.number)
    if not ordered or any((a.on_demand_usd_per_hour or 0.0) <= 0 for a in ordered):
        return None
    first = ordered[0]
    total = (
        (first.billable_seconds or 0.0)
        * ledger.startup_fraction(first)
        / 3600.0
        * first.on_demand_usd_per_hour
    )
    later_start: int | None = None
    for a in reversed(ordered):
        start, end = a.start_step or 0, a.end_step or 0
        if later_start is not None:
            kept = min(end, later_start) - start
        else:
            kept = 0 if a.outcome in states.WASTED else end - start
        if kept > 0 and end > start:
            training = (a.billable_seconds or 0.0) * (1.0 - ledger.startup_fraction(a))
            total += kept * training / (end - start) / 3600.0 * a.on_demand_usd_per_hour
        later_start = start if later_start is None else min(later_start, start)
    return total


def _against_all_on_demand(attempts: Sequence[JobAttempt], total_usd: float) -> dict[str, Any]:
    baseline = all_on_demand_usd(attempts)
    return {
        "all_on_demand_usd": round(baseline, 6) if baseline is not None else None,
        # Negative when interruptions cost more than spot saved.
        "savings_vs_all_on_demand_usd": round(baseline - total_usd, 6) if baseline is not None else None,
    }


def goodput(attempts: Sequence[JobAttempt]) -> dict[str, Any]:
    """The job's dollars split by what they bought (`ledger.goodput_parts`), and goodput: the
    productive share (None before anything was spent)."""
    parts = dict.fromkeys(ledger.GOODPUT_PARTS, 0.0)
    for a in attempts:
        for name, usd in ledger.goodput_parts(a).items():
            parts[name] += usd
    total = sum(parts.values())
    return {
        **{name: round(usd, 6) for name, usd in parts.items()},
        "goodput": round(parts["productive_usd"] / total, 6) if total > 0 else None,
    }


def job_goodput(session: Session, job_id: str) -> dict[str, Any]:
    """`goodput` of the job's attempts so far (running ones as of their last heartbeat)."""
    return goodput(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).all())


def publish_cost_report(store: ObjectStore, report: dict[str, Any]) -> str:
    """Write the report to the job's store area; returns its URI."""
    return store.put_bytes(
        cost_report_key(report["job_id"]),
        json.dumps(report, indent=2).encode(),
        content_type="application/json",
    )


def record_cost_report(
    session: Session, job: Job, attempt_id: str | None, report: dict[str, Any], uri: str
) -> None:
    """The cost event and the job's `result.cost_report_uri`, for a report already published."""
    totals = report["totals"]
    events.add(
        session,
        job.id,
        events.COST,
        f"{format_usd(totals['cost_usd'])} over {format_duration(totals['billable_seconds'])}",
        attempt_id=attempt_id,
        data={"uri": uri, **totals},
    )
    job.result = {**(job.result or {}), "cost_report_uri": uri}
