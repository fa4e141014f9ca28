"""A sweep estimated as the trials it runs: each trial is a training run of the job's shape with
its own hyperparameters, up to `max_concurrent_trials` of them at once, each on an instance of
the option's type. The sweep holds that many instances from its start to its last trial's end,
so it is priced for them: its rate is the instances' rate, its run the trials laid out over that
many slots (longest first), its cost the rate over that run. With equal trials that divide
evenly among the slots, that is the number of trials times a trial's cost.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import replace
from typing import Any

from trainyard.platform.scheduling.estimator import Estimate
from trainyard.platform.spec import JobSpec

# The hyperparameters a trial's size depends on (its tokens, its memory, its speed); trials that
# differ only in others (learning rate, seed, ...) have the same estimate.
SHAPE = (
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "seq_len",
    "lora_r",
    "num_labels",
)


def trial_shapes(spec: JobSpec) -> list[tuple[JobSpec, int]]:
    """The distinct trial specs by size, each with how many trials have it."""
    assert spec.sweep is not None
    base = spec.model_dump(mode="json")
    shapes: dict[str, tuple[JobSpec, int]] = {}
    for overrides in spec.sweep.overrides():
        sized = {k: v for k, v in overrides.items() if k in SHAPE}
        key = json.dumps(sized, sort_keys=True)
        if key in shapes:
            trial, n = shapes[key]
            shapes[key] = (trial, n + 1)
            continue
        data: dict[str, Any] = {**base, "sweep": None}
        data["hyperparameters"] = {**base["hyperparameters"], **sized}
        shapes[key] = (JobSpec.model_validate(data), 1)
    return list(shapes.values())


def makespan(seconds: list[float], slots: int) -> float:
    """When the last of these runs ends, laid out longest first over `slots` parallel slots."""
    ends = [0.0] * max(1, slots)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(ends, ends[0] + s)  # onto the slot that frees first
    return max(ends)


def combine(spec: JobSpec, trials: list[tuple[Estimate, int]], min_billed: float) -> Estimate:
    """One option's sweep estimate from its trials' estimates on it (each with its count); its
    on-demand and spot figures beside it are the caller's to set (`pair`)."""
    assert spec.sweep is not None
    slots = spec.sweep.concurrency
    first = trials[0][0]
    seconds = [e.seconds for e, n in trials for _ in range(n)]
    run = makespan(seconds, slots)
    rate = first.usd_per_hour * slots
    cost = max(run, min_billed) / 3600 * rate
    tokens = sum(e.tokens * n for e, n in trials)
    budget = spec.policy.max_cost_usd
    return replace(
        first,
        fits=all(e.fits for e, _ in trials),
        tokens=tokens,
        steps=sum(e.steps * n for e, n in trials),
        flops=sum(e.flops * n for e, n in trials),
        compute_seconds=sum(e.compute_seconds * n for e, n in trials),
        seconds=run,
        usd_per_hour=rate,
        cost_usd=cost,
        expected_preemptions=sum(e.expected_preemptions * n for e, n in trials),
        usd_per_million_tokens=cost / tokens * 1e6 if tokens else first.usd_per_million_tokens,
        meets_deadline=None if first.deadline_seconds is None else run <= first.deadline_seconds,
        within_budget=None if budget is None else cost <= budget,
        trials=len(seconds),
        concurrent_trials=slots,
    )


def pair(on_demand: Estimate, spot: Estimate | None) -> tuple[Estimate, Estimate | None]:
    """A sweep's on-demand and spot options, each carrying the other's run and cost."""
    od = replace(on_demand, on_demand_seconds=on_demand.seconds, on_demand_cost_usd=on_demand.cost_usd)
    if spot is None:
        return replace(od, spot_seconds=None, spot_cost_usd=None), None
    od = replace(od, spot_seconds=spot.seconds, spot_cost_usd=spot.cost_usd)
    return od, replace(
        spot,
        on_demand_seconds=od.seconds,
        on_demand_cost_usd=od.cost_usd,
        spot_seconds=spot.seconds,
        spot_cost_usd=spot.cost_usd,
    )
