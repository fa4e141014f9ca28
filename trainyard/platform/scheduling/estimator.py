"""Estimate a training run on one instance type: does it fit, how long, what it costs.

The estimate is the run itself, not the instance's hourly price: tokens x FLOPs per token over the
devices' sustained FLOP/s, plus start-up, plus (on spot) the expected cost of interruptions. That
is what lets a dearer, faster machine win on total dollars.

The job-shape part (memory plan, tokens per second, start-up) is a cached ``profiles.Profile``;
finishing it for one job's token count, deadline and budget is ``run_figures``, written once and
used both here, for one job's options, and over arrays by ``batch.choose_many``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from trainyard import durations, money
from trainyard.platform.scheduling.catalog import Catalog
from trainyard.platform.scheduling.instance_types import InstanceType
from trainyard.platform.scheduling.model_info import EstimateInputError, ModelInfo
from trainyard.platform.scheduling.profiles import MemoryBreakdown, Profile, profile
from trainyard.platform.scheduling.throughput import LearnedThroughput
from trainyard.platform.spec import JobSpec


@dataclass(frozen=True, slots=True)
class Estimate:
    """One option: a job on one instance type, on-demand or spot."""

    instance_type: str
    spot: bool
    kind: str
    accelerator: str | None
    accelerator_family: str | None
    accelerator_count: int
    workers: int
    method: str
    fits: bool
    # "single", "ddp" (replicated) or "fsdp" (sharded weights, gradients and optimizer state).
    strategy: str
    gradient_checkpointing: bool
    # Per worker; their product is the job's batch_size x gradient_accumulation_steps.
    micro_batch_size: int
    gradient_accumulation_steps: int
    memory: MemoryBreakdown
    model_parameters: int
    trainable_parameters: int
    tokens: int
    steps: int
    flops: float
    tokens_per_second: float
    # "model" (FLOPs over peak x utilisation) or "learned" (measured on comparable runs).
    throughput_source: str
    # How many finished runs a learned figure came from; 0 for the model's.
    throughput_runs: int
    startup_seconds: float
    # After a spot interruption: reprovisioning and the model reload.
    restart_seconds: float
    compute_seconds: float
    seconds: float
    usd_per_hour: float
    cost_usd: float
    on_demand_seconds: float
    on_demand_cost_usd: float
    spot_seconds: float | None
    spot_cost_usd: float | None
    expected_preemptions: float
    # The spot option's interruption rate (0 on demand).
    interruptions_per_hour: float
    usd_per_million_tokens: float
    deadline_seconds: float | None
    meets_deadline: bool | None
    within_budget: bool | None
    # A sweep: how many trials it runs, and how many at once (one instance each); its tokens,
    # steps and cost are all its trials', its rate that of the instances it holds.
    trials: int = 1
    concurrent_trials: int = 1

    @property
    def option(self) -> str:
        return f"{self.instance_type} spot" if self.spot else self.instance_type

    @property
    def reason(self) -> str:
        """One line a person can read: the plan, the run and its price."""
        if not self.fits:
            return (
                f"{self.option}: does not fit: needs {self.memory.total_gb:.1f} GB per device "
                f"({self.strategy}, micro-batch {self.micro_batch_size}"
                f"{', checkpointed' if self.gradient_checkpointing else ''}), "
                f"has {self.memory.capacity_gb:.1f} GB"
            )
        plan = (
            f"{self.strategy}, micro-batch {self.micro_batch_size} x {self.gradient_accumulation_steps}"
            + (" + gradient checkpointing" if self.gradient_checkpointing else "")
        )
        text = (
            f"{self.option}: {_device_text(self)}, {plan}, "
            f"{self.memory.total_gb:.1f}/{self.memory.capacity_gb:.1f} GB; "
            f"{self.tokens / 1e6:,.1f}M tokens at {self.tokens_per_second:,.0f} tok/s "
            f"({self.throughput_text}) -> {format_duration(self.seconds)}, {format_usd(self.cost_usd)}"
        )
        if self.trials > 1:
            text += f" for {self.trials} trials, {self.concurrent_trials} at a time"
        if self.spot:
            text += f" with {self.expected_preemptions:.2f} expected interruptions"
        return text

    @property
    def throughput_text(self) -> str:
        """Where the tokens per second came from: `model`, or `learned from 3 runs`."""
        if self.throughput_source != "learned":
            return self.throughput_source
        return f"learned from {self.throughput_runs} run{'' if self.throughput_runs == 1 else 's'}"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "memory"}
        out["memory"] = self.memory.to_dict()
        out["option"] = self.option
        out["reason"] = self.reason
        return out


def _device_text(e: Estimate) -> str:
    if e.accelerator is None:
        return f"CPU, {e.workers} workers"
    return f"{e.accelerator_count}x {e.accelerator}"


def format_duration(seconds: float) -> str:
    # The one duration rule (trainyard/durations.py), on the figure a plan stores (to a tenth of
    # a second), so a reason's time and the plan's `estimated_seconds` read the same.
    return durations.format_duration(round(seconds, 1) if math.isfinite(seconds) else seconds)


def format_usd(usd: float) -> str:
    return money.format_usd(usd)


def job_tokens(spec: JobSpec, dataset_tokens: int, tokens_per_step: int) -> int:
    """Tokens the run processes: max_steps x tokens per step if set, else dataset x epochs."""
    hp = spec.hyperparameters
    if hp.max_steps is not None:
        return hp.max_steps * tokens_per_step
    return round(dataset_tokens * (hp.epochs or 1.0))


def run_figures(
    tokens: Any,
    tps: Any,
    startup: Any,
    restart: Any,
    tokens_per_step: Any,
    every_steps: Any,
    rate: Any,
    min_billed: float,
    max_overhead: float,
    minimum: Any = min,
    maximum: Any = max,
) -> tuple[Any, Any, Any, Any]:
    """Run length on demand and on spot, and billed hours. Works on floats or numpy arrays.

    Spot: each interruption costs the restart plus, on average, half a checkpoint interval of lost
    work. With N = rate x T_spot interruptions, T_spot = T / (1 - rate x cost_per_interruption),
    capped so a hopeless spot plan shows as very slow rather than as never finishing.
    """
    compute = tokens / tps
    on_demand = startup + compute
    interval = every_steps * tokens_per_step / tps
    lost = 0.5 * minimum(interval, compute)
    overhead = minimum(rate * (restart + lost), max_overhead)
    spot = on_demand / (1.0 - overhead)
    return compute, on_demand, spot, (maximum(on_demand, min_billed), maximum(spot, min_billed))


def estimate(
    spec: JobSpec,
    itype: InstanceType,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    *,
    learned: LearnedThroughput | None = None,
    now: datetime,
) -> Estimate:
    """Estimate ``spec`` on ``itype`` on demand; ``estimate_all`` adds the spot option beside it."""
    prof = profile(spec, itype, catalog, model, learned=learned)
    return _on_demand(spec, itype, catalog, model, dataset_tokens, prof, now)


def _on_demand(
    spec: JobSpec,
    itype: InstanceType,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    prof: Profile,
    now: datetime,
) -> Estimate:
    c = catalog.constants
    tokens = job_tokens(spec, dataset_tokens, prof.tokens_per_step)
    if tokens <= 0:
        raise EstimateInputError(
            "the run processes no tokens: give dataset_tokens or a readable training file",
            param="dataset_tokens",
        )
    compute, od_seconds, spot_seconds, (od_billed, spot_billed) = run_figures(
        tokens,
        prof.tokens_per_second,
        prof.startup_seconds,
        prof.restart_seconds,
        prof.tokens_per_step,
        spec.checkpoint.every_steps,
        prof.preemptions_per_second,
        c.min_billed_seconds,
        c.spot_max_overhead_fraction,
    )
    od_cost = od_billed / 3600 * itype.on_demand_usd_per_hour
    if itype.spot_usd_per_hour is not None:
        spot_cost: float | None = spot_billed / 3600 * itype.spot_usd_per_hour
        spot_secs: float | None = spot_seconds
    else:
        spot_cost = spot_secs = None
    seconds, cost = od_seconds, od_cost
    deadline = spec.policy.deadline
    deadline_seconds = (deadline - now).total_seconds() if deadline is not None else None
    budget = spec.policy.max_cost_usd
    accel = catalog.accelerator_for(itype)
    return Estimate(
        instance_type=itype.name,
        spot=False,
        kind=itype.kind,
        accelerator=itype.accelerator,
        accelerator_family=accel.family if accel else None,
        accelerator_count=itype.accelerator_count,
        workers=itype.workers,
        method=spec.method,
        fits=prof.fits,
        strategy=prof.strategy,
        gradient_checkpointing=prof.gradient_checkpointing,
        micro_batch_size=prof.micro_batch_size,
        gradient_accumulation_steps=prof.gradient_accumulation_steps,
        memory=prof.memory,
        model_parameters=model.parameters,
        trainable_parameters=prof.trainable_parameters,
        tokens=tokens,
        steps=math.ceil(tokens / prof.tokens_per_step),
        flops=prof.flops_per_token * tokens,
        tokens_per_second=prof.tokens_per_second,
        throughput_source=prof.throughput_source,
        throughput_runs=prof.throughput_runs,
        startup_seconds=prof.startup_seconds,
        restart_seconds=prof.restart_seconds,
        compute_seconds=compute,
        seconds=seconds,
        usd_per_hour=itype.on_demand_usd_per_hour,
        cost_usd=cost,
        on_demand_seconds=od_seconds,
        on_demand_cost_usd=od_cost,
        spot_seconds=spot_secs,
        spot_cost_usd=spot_cost,
        expected_preemptions=0.0,
        interruptions_per_hour=0.0,
        usd_per_million_tokens=cost / tokens * 1e6,
        deadline_seconds=deadline_seconds,
        meets_deadline=None if deadline_seconds is None else seconds <= deadline_seconds,
        within_budget=None if budget is None else cost <= budget,
    )


def estimate_all(
    spec: JobSpec,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    learned: LearnedThroughput | None = None,
    now: datetime | None = None,
) -> list[Estimate]:
    """Every option: each catalog type on demand and, where priced, on spot. Order is catalog
    order, on-demand before spot; policies break ties by it and narrow it to the pools that exist.
    A sweep's options are its trials' (`sweeps`)."""
    now = now or datetime.now(UTC)
    if spec.sweep is not None:
        return _sweep_options(spec, catalog, model, dataset_tokens, learned, now)
    out: list[Estimate] = []
    for itype in catalog.types:
        prof = profile(spec, itype, catalog, model, learned=learned)
        on_demand = _on_demand(spec, itype, catalog, model, dataset_tokens, prof, now)
        out.append(on_demand)
        if itype.spot_usd_per_hour is not None:
            out.append(_on_spot(on_demand, itype, prof, spec))
    return out


def _sweep_options(
    spec: JobSpec,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    learned: LearnedThroughput | None,
    now: datetime,
) -> list[Estimate]:
    # Imported here: `sweeps` builds on this module's Estimate.
    from trainyard.platform.scheduling import sweeps

    shapes = sweeps.trial_shapes(spec)
    min_billed = catalog.constants.min_billed_seconds
    out: list[Estimate] = []
    for itype in catalog.types:
        od_trials, spot_trials = [], []
        for trial, n in shapes:
            prof = profile(trial, itype, catalog, model, learned=learned)
            on_demand = _on_demand(trial, itype, catalog, model, dataset_tokens, prof, now)
            od_trials.append((on_demand, n))
            if itype.spot_usd_per_hour is not None:
                spot_trials.append((_on_spot(on_demand, itype, prof, trial), n))
        od, spot = sweeps.pair(
            sweeps.combine(spec, od_trials, min_billed),
            sweeps.combine(spec, spot_trials, min_billed) if spot_trials else None,
        )
        out.extend([od] if spot is None else [od, spot])
    return out


def _on_spot(on_demand: Estimate, itype: InstanceType, prof: Profile, spec: JobSpec) -> Estimate:
    """The same run on spot capacity: its run length and cost were figured beside the on-demand ones."""
    assert on_demand.spot_seconds is not None and on_demand.spot_cost_usd is not None
    seconds, cost = on_demand.spot_seconds, on_demand.spot_cost_usd
    budget = spec.policy.max_cost_usd
    return replace(
        on_demand,
        spot=True,
        seconds=seconds,
        cost_usd=cost,
        usd_per_hour=itype.price(True),
        expected_preemptions=prof.preemptions_per_second * seconds,
        interruptions_per_hour=prof.preemptions_per_second * 3600,
        usd_per_million_tokens=cost / on_demand.tokens * 1e6,
        meets_deadline=None if on_demand.deadline_seconds is None else seconds <= on_demand.deadline_seconds,
        within_budget=None if budget is None else cost <= budget,
    )
