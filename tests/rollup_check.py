"""The cost rollup worked out again from attempts and jobs, in Python, with the ledger's own
figures (`costs.ledger`), to hold the database's triggers to: every attempt's figures spread
evenly over its billed span per UTC hour and day, jobs counted where their first attempt (per
set of attempt dimensions) started, a succeeded job's estimate where it finished."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.costs import ledger
from trainyard.platform.models import (
    ROLLUP_COUNTS,
    ROLLUP_FIGURES,
    CostRollup,
    CostRollupKey,
    Job,
    JobAttempt,
)

GRAINS = {"h": 3600, "d": 86_400}
Key = tuple[str, str, str, str, str, bool, str]
Cell = tuple[str, float, Key]


def firsts(attempts: list[JobAttempt]) -> dict[str, int]:
    """Per attempt: bit s set when no earlier attempt of its job has the same values of the
    attempt dimensions in set s (1 instance type, 2 accelerator, 4 spot)."""
    out: dict[str, int] = {}
    for a in sorted(attempts, key=lambda a: a.number):
        earlier = [p for p in attempts if p.number < a.number]
        mask = 0
        for s in range(8):
            same = [
                p
                for p in earlier
                if (not s & 1 or p.instance_type == a.instance_type)
                and (not s & 2 or p.accelerator == a.accelerator)
                and (not s & 4 or p.spot == a.spot)
            ]
            mask |= (not same) << s
        out[a.id] = mask
    return out


def _key(job: Job, instance: str | None, accelerator: str | None, spot: bool, outcome: str | None) -> Key:
    model = (job.spec or {}).get("base_model") or ""
    return (job.team_id, job.api_key_id or "", model, instance or "", accelerator or "", spot, outcome or "")


def _add(cells: dict[Cell, dict[str, float]], cell: Cell, figures: dict[str, float]) -> None:
    row = cells[cell]
    for name, value in figures.items():
        row[name] = row.get(name, 0.0) + value


def expected(session: Session) -> dict[Cell, dict[str, float]]:
    cells: dict[Cell, dict[str, float]] = defaultdict(dict)
    jobs = {j.id: j for j in session.scalars(select(Job))}
    attempts = list(session.scalars(select(JobAttempt)))
    by_job: dict[str, list[JobAttempt]] = defaultdict(list)
    for a in attempts:
        by_job[a.job_id].append(a)
    first = {k: v for group in by_job.values() for k, v in firsts(group).items()}
    for a in attempts:
        job = jobs[a.job_id]
        key = _key(job, a.instance_type or job.instance_type, a.accelerator, a.spot, a.outcome)
        cost, span = a.cost_usd, max(a.billable_seconds, 0.0)
        lost = a.outcome in states.WASTED
        parts = ledger.goodput_parts(a)
        total = {
            "usd": cost,
            "billable_seconds": span,
            "gpu_seconds": span * a.accelerator_count,
            "tokens": float(ledger.new_tokens(a)),
            "spot_savings_usd": ledger.spot_savings_usd(a),
            "startup_usd": 0.0 if lost else parts["startup_usd"],
            "recomputed_usd": 0.0 if lost else parts["recomputed_usd"],
            "lost_usd": cost if lost else 0.0,
        }
        s = a.started_at.timestamp()
        for grain, size in GRAINS.items():
            k0 = math.floor(s / size)
            k1 = max(k0, math.ceil((s + span) / size) - 1) if span > 0 else k0
            for k in range(k0, k1 + 1):
                f = max(min(s + span, (k + 1) * size) - max(s, k * size), 0) / span if span > 0 else 1.0
                piece = {name: value * f for name, value in total.items()}
                if k == k0:
                    piece |= {f"jobs_{b}": float(first[a.id] >> b & 1) for b in range(8)}
                _add(cells, (grain, float(k * size), key), piece)
    for job in jobs.values():
        estimate = (job.plan or {}).get("estimated_cost_usd")
        if job.status != states.SUCCEEDED or job.cost_usd <= 0 or not isinstance(estimate, int | float):
            continue
        if isinstance(estimate, bool) or not estimate > 0:
            continue
        plan = job.plan or {}
        accelerator = plan.get("accelerator") if isinstance(plan.get("accelerator"), str) else None
        key = _key(job, job.instance_type, accelerator, plan.get("spot") is True, "succeeded")
        at = (job.finished_at or job.created_at).timestamp()
        for grain, size in GRAINS.items():
            figures = {
                "estimated_usd": float(estimate),
                "estimate_actual_usd": job.cost_usd,
                "estimate_jobs": 1.0,
            }
            _add(cells, (grain, float(math.floor(at / size) * size), key), figures)
    return cells


def actual(session: Session) -> dict[Cell, dict[str, float]]:
    keys = {
        k.id: (k.team_id, k.api_key_id, k.model, k.instance_type, k.accelerator, k.spot, k.outcome)
        for k in session.scalars(select(CostRollupKey))
    }
    cells: dict[Cell, dict[str, float]] = {}
    for r in session.scalars(select(CostRollup)):
        cells[(r.grain, r.bucket.timestamp(), keys[r.key_id])] = {
            name: float(getattr(r, name)) for name in (*ROLLUP_FIGURES, *ROLLUP_COUNTS)
        }
    return cells


def _nothing(figures: dict[str, float]) -> bool:
    return all(abs(v) < 1e-7 for v in figures.values())


def assert_matches(session: Session) -> None:
    """The rollup holds what the attempts and jobs say, no more, no less, and nothing negative
    but spot savings."""
    session.expire_all()
    want, got = expected(session), actual(session)
    names = (*ROLLUP_FIGURES, *ROLLUP_COUNTS)
    for cell in sorted(set(want) | set(got), key=str):
        w = {n: want.get(cell, {}).get(n, 0.0) for n in names}
        g = {n: got.get(cell, {}).get(n, 0.0) for n in names}
        if _nothing(w) and _nothing(g):
            continue
        assert g == pytest.approx(w, rel=1e-9, abs=1e-6), cell
        negative = {n: v for n, v in g.items() if v < -1e-9 and n != "spot_savings_usd"}
        assert not negative, (cell, negative)
