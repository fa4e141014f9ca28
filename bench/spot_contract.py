"""Spot simulation: a month of interruption traces, three policies, dollars and deadline misses.

Run ``python -m bench.spot_contract``; ``results()`` returns the figures for the harness.

Traces, per instance family, over 30 days:
  - ``poisson``: interruptions at the rate of the family's published frequency band (AWS Spot
    Instance Advisor publishes "frequency of interruption" bands of <5%, 5-10%, 10-15%, 15-20% and
    >20% of instances interrupted over the trailing month; the band midpoint, >20% read as 30%,
    becomes a per-instance Poisson rate). The family -> band assignment below is an assumption,
    typical of the advisor's listings, not read from it.
  - ``catalog``: Poisson at the rates the estimator plans with (0.05/h for one GPU, 0.10/h for
    eight; ``estimator_constants.yaml``), far above the bands: a market much busier than the
    advisor reports, where interruptions are the rule.
  - ``bursty``: the band background plus capacity crunches, when a family's spot capacity is
    reclaimed again and again: a few per month, hours long, at one interruption per hour or so.
    Jobs on one family share its trace, so a crunch hits all of them at once.

Workload: jobs arrive over the month on one of four GPU types (prices from the shipped catalog),
each with a run length, a checkpoint every 30 minutes of training and a deadline 1.05-2x its
on-demand run length away. Each job runs under three policies:
  - always on-demand;
  - always spot (restart after every interruption, losing the work since the last checkpoint);
  - the deadline contract (``trainyard.platform.scheduling.deadline_contract``, the code the
    platform runs): spot while spot still finishes in time with 0.9 confidence, re-planned at
    every checkpoint and every interruption, on-demand once it does not. It plans with the
    interruption rates the estimator ships (``estimator_constants.yaml``), not the trace's.
Every second from launch to finish is billed (restarts included) at the capacity's price.
"""

from __future__ import annotations

import bisect
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import figure, format_table
from trainyard.platform.scheduling import load_catalog
from trainyard.platform.scheduling.deadline_contract import Option, decide

MONTH_H = 30 * 24.0
CONFIDENCE = 0.9
CHECKPOINT_H = 0.5
MODEL_LOAD_S = 60.0
# Instance type -> its family's band (fraction of instances interrupted per month), an assumption.
BANDS = {"g6.xlarge": 0.075, "g5.xlarge": 0.125, "p4d.24xlarge": 0.30, "p5.48xlarge": 0.30}
# Bursty: crunches per family per month, their length (h) and their interruption rate (/h).
CRUNCHES_PER_MONTH = 4
CRUNCH_HOURS = (2.0, 8.0)
CRUNCH_RATE_PER_H = 1.0


@dataclass(frozen=True)
class Kind:
    name: str
    on_demand: float
    spot: float
    startup_s: float
    restart_s: float
    # The rate the platform plans with (estimator constants), per hour.
    planned_rate: float


@dataclass(frozen=True)
class Job:
    kind: str
    arrival_h: float
    work_h: float
    deadline_h: float  # absolute


@dataclass
class Run:
    cost: float = 0.0
    finish_h: float = 0.0
    interruptions: int = 0
    moved: bool = False
    started_on_demand: bool = False


def kinds() -> dict[str, Kind]:
    catalog = load_catalog()
    c = catalog.constants
    out = {}
    for name in BANDS:
        t = catalog[name]
        assert t.spot_usd_per_hour is not None
        startup = c.startup_seconds_by_instance.get(name, c.startup_seconds_by_kind[t.kind]) + MODEL_LOAD_S
        out[name] = Kind(
            name,
            t.on_demand_usd_per_hour,
            t.spot_usd_per_hour,
            startup,
            c.spot_restart_overhead_seconds + MODEL_LOAD_S,
            c.spot_preemptions_per_hour[t.kind],
        )
    return out


def band_rate(monthly_fraction: float) -> float:
    """Per-hour Poisson rate at which a fraction of instances is interrupted within a month."""
    return -math.log(1.0 - monthly_fraction) / MONTH_H


def traces(variant: str, table: dict[str, Kind], rng: random.Random) -> dict[str, list[float]]:
    """Interruption times (hours into the month) per instance type; a horizon past the month so
    that jobs arriving late still meet interruptions."""
    horizon = MONTH_H * 1.5
    bursty = variant == "bursty"
    out: dict[str, list[float]] = {}
    for name, band in BANDS.items():
        times: list[float] = []
        t = 0.0
        rate = table[name].planned_rate if variant == "catalog" else band_rate(band)
        while True:
            t += rng.expovariate(rate)
            if t > horizon:
                break
            times.append(t)
        if bursty:
            for _ in range(round(CRUNCHES_PER_MONTH * horizon / MONTH_H)):
                start = rng.uniform(0, horizon)
                end = start + rng.uniform(*CRUNCH_HOURS)
                t = start
                while True:
                    t += rng.expovariate(CRUNCH_RATE_PER_H)
                    if t > end:
                        break
                    times.append(t)
        out[name] = sorted(times)
    return out


def workload(n: int, rng: random.Random) -> list[Job]:
    jobs = []
    for _ in range(n):
        kind = rng.choice(list(BANDS))
        work = min(48.0, max(1.0, rng.lognormvariate(math.log(8.0), 0.8)))
        arrival = rng.uniform(0, MONTH_H)
        jobs.append(Job(kind, arrival, work, arrival + (work + 0.1) * rng.uniform(1.05, 2.0)))
    return jobs


def _next(trace: list[float], after: float) -> float:
    i = bisect.bisect_right(trace, after)
    return trace[i] if i < len(trace) else math.inf


def on_demand(job: Job, k: Kind) -> Run:
    hours = k.startup_s / 3600 + job.work_h
    return Run(cost=hours * k.on_demand, finish_h=job.arrival_h + hours)


def spot(job: Job, k: Kind, trace: list[float], contract: bool = False) -> Run:
    """Spot with restarts; with ``contract``, re-planned at every checkpoint and interruption."""
    run = Run()
    now, done = job.arrival_h, 0.0
    startup = k.startup_s / 3600
    if contract and _moves(job, k, now, 0.0, startup, running=False):
        run.started_on_demand = True
        return _to_on_demand(job, k, run, now, done, moved=False)
    while True:
        up = now + startup  # training starts
        hit = _next(trace, now)
        if hit < up:  # interrupted while starting: start again
            run.cost += (hit - now) * k.spot
            run.interruptions += 1
            now, startup = hit, k.restart_s / 3600
            if contract and _moves(job, k, now, done, startup, running=False):
                return _to_on_demand(job, k, run, now, done)
            continue
        # Train checkpoint by checkpoint until the work is done or an interruption comes.
        t, progress = up, done
        while True:
            step = min(CHECKPOINT_H, job.work_h - progress)
            if hit < t + step:
                run.cost += (hit - now) * k.spot
                run.interruptions += 1
                now, done, startup = hit, progress, k.restart_s / 3600
                break
            t, progress = t + step, progress + step
            if progress >= job.work_h - 1e-9:
                run.cost += (t - now) * k.spot
                run.finish_h = t
                return run
            if contract and _moves(job, k, t, progress, 0.0, running=True):
                run.cost += (t - now) * k.spot
                return _to_on_demand(job, k, run, t, progress)
        if contract and _moves(job, k, now, done, startup, running=False):
            return _to_on_demand(job, k, run, now, done)


def _moves(job: Job, k: Kind, now: float, done: float, startup_h: float, *, running: bool) -> bool:
    left = job.work_h - done
    current = Option(
        k.name,
        True,
        k.spot,
        seconds=left * 3600,
        startup_seconds=startup_h * 3600,
        interruptions_per_hour=k.planned_rate,
        restart_seconds=k.restart_s,
        checkpoint_interval_seconds=CHECKPOINT_H * 3600,
    )
    fallback = Option(k.name, False, k.on_demand, seconds=left * 3600, startup_seconds=k.startup_s)
    verdict = decide(
        current,
        [fallback],
        objective="deadline",
        confidence=CONFIDENCE,
        seconds_left=(job.deadline_h - now) * 3600,
    )
    return not verdict.stay


def _to_on_demand(job: Job, k: Kind, run: Run, now: float, done: float, moved: bool = True) -> Run:
    hours = k.startup_s / 3600 + (job.work_h - done)
    run.cost += hours * k.on_demand
    run.finish_h = now + hours
    run.moved = moved
    return run


def simulate(variant: str, n_jobs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    table = kinds()
    per_type = traces(variant, table, rng)
    jobs = workload(n_jobs, rng)
    out: dict[str, Any] = {}
    for policy in ("on_demand", "spot", "contract"):
        cost = misses = interruptions = moved = started = 0.0
        for job in jobs:
            k = table[job.kind]
            if policy == "on_demand":
                run = on_demand(job, k)
            else:
                run = spot(job, k, per_type[job.kind], contract=policy == "contract")
            cost += run.cost
            misses += run.finish_h > job.deadline_h + 1e-9
            interruptions += run.interruptions
            moved += run.moved
            started += run.started_on_demand
        out[policy] = {
            "usd": cost,
            "misses": int(misses),
            "interruptions": int(interruptions),
            "moved": int(moved),
            "started_on_demand": int(started),
        }
    out["jobs"] = len(jobs)
    out["interruptions_in_traces"] = {name: len(t) for name, t in per_type.items()}
    return out


def results(quick: bool = False) -> list[dict[str, Any]]:
    n_jobs, seeds = (300, 3) if quick else (1000, 5)
    rows: list[dict[str, Any]] = []
    for variant in ("poisson", "bursty", "catalog"):
        runs = [simulate(variant, n_jobs, seed) for seed in range(seeds)]

        def col(policy: str, field: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(r[policy][field]) for r in runs]

        detail = {
            "jobs_per_month": n_jobs,
            "months": seeds,
            "per_month": runs,
            "always_spot_usd": col("spot", "usd"),
            "always_spot_misses": col("spot", "misses"),
            "contract_moved_to_on_demand": col("contract", "moved"),
            "contract_started_on_demand": col("contract", "started_on_demand"),
        }
        rows.append(
            figure(
                f"spot_{variant}_contract_usd_vs_on_demand",
                col("contract", "usd"),
                col("on_demand", "usd"),
                goal="ratio <= 0.6 (spot is 50-75% cheaper)",
                unit="$",
                higher_is_better=False,
                goal_ratio=0.6,
                detail=detail,
            )
        )
        rows.append(
            figure(
                f"spot_{variant}_always_spot_usd_vs_on_demand",
                col("spot", "usd"),
                col("on_demand", "usd"),
                goal="for information",
                unit="$",
            )
        )
        rows.append(
            figure(
                f"spot_{variant}_contract_misses_vs_always_spot",
                col("contract", "misses"),
                col("spot", "misses"),
                goal="ours <= on-demand's + 1% of jobs",
                unit="jobs",
                detail={"on_demand_misses": col("on_demand", "misses")},
            )
        )
        ok_misses = max(col("contract", "misses")) <= max(col("on_demand", "misses")) + 0.01 * n_jobs
        rows[-1]["ok"] = bool(ok_misses)
    return rows


def main() -> None:
    started = time.monotonic()
    rows = results(quick="--quick" in sys.argv)
    print(format_table(rows))
    for row in rows:
        if row["name"].endswith("_usd_vs_on_demand") and "contract" in row["name"]:
            d = row["detail"]
            spot_usd = sum(d["always_spot_usd"]) / len(d["always_spot_usd"])
            print(
                f"{row['name']}: always spot ${spot_usd:,.0f}/month, "
                f"misses {d['always_spot_misses']}; contract moved {d['contract_moved_to_on_demand']} jobs, "
                f"started {d['contract_started_on_demand']} on demand"
            )
    print(f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
