"""Estimate a training run on one instance type: does it fit, how long, what it costs.

The estimate is the run itself, not the instance's hourly price: tokens x FLOPs per token over the
devices' sustained FLOP/s, plus start-up, plus (on spot) the expected cost of interruptions. That
is what lets a dearer, faster machine win on total dollars.

The work splits in two. A *profile* holds everything that depends only on the job's shape (model,
method, batch, sequence length) and the instance type: memory plan, tokens per second, start-up.
It is cached on the catalog, because a queue holds many jobs of few shapes. Finishing a profile
for one job's token count, deadline and budget is a handful of arithmetic operations, written once
in ``_run_figures`` and used both for one estimate and, over arrays, for planning many jobs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from trainyard.platform.scheduling.catalog import Catalog, InstanceType
from trainyard.platform.scheduling.model_info import EstimateInputError, ModelInfo
from trainyard.platform.spec import JobSpec

GB = 1e9
_CACHE_LIMIT = 100_000


# --------------------------------------------------------------------------------------------
# Learning from measured runs


@dataclass(frozen=True, slots=True)
class ThroughputObservation:
    """Measured training throughput of one finished run.

    ``accelerator`` is the accelerator name from the catalog, or ``"cpu"`` for CPU types, whose
    ``accelerator_count`` is then the vCPU count (see ``for_instance``).
    """

    model_parameters: int
    method: str
    accelerator: str
    accelerator_count: int
    tokens_per_second: float

    @classmethod
    def for_instance(
        cls, itype: InstanceType, *, model_parameters: int, method: str, tokens_per_second: float
    ) -> ThroughputObservation:
        accelerator, count = throughput_key(itype)
        return cls(model_parameters, method, accelerator, count, tokens_per_second)


def throughput_key(itype: InstanceType) -> tuple[str, int]:
    """How observations on an instance type are filed: accelerator and how many of them."""
    if itype.accelerator is None:
        return "cpu", itype.vcpus
    return itype.accelerator, itype.accelerator_count * itype.nodes


class LearnedThroughput:
    """Measured throughput that replaces the FLOP-based prediction for comparable jobs.

    Comparable means the same method and accelerator and a model within ``max_parameter_ratio``
    of the job's size. Each match is scaled to the job by the parameter ratio (throughput falls
    roughly as 1/parameters at fixed FLOP/s) and by the device count; the median of the matches
    is used so one odd run does not swing the estimate.
    """

    def __init__(self, observations: Iterable[ThroughputObservation], *, max_parameter_ratio: float = 2.0):
        self.max_parameter_ratio = max_parameter_ratio
        self._by_key: dict[tuple[str, str], list[ThroughputObservation]] = {}
        for obs in observations:
            if obs.tokens_per_second > 0 and obs.model_parameters > 0 and obs.accelerator_count > 0:
                self._by_key.setdefault((obs.method, obs.accelerator), []).append(obs)

    @classmethod
    def from_observations(
        cls, observations: Iterable[ThroughputObservation], *, max_parameter_ratio: float = 2.0
    ) -> LearnedThroughput:
        return cls(observations, max_parameter_ratio=max_parameter_ratio)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def tokens_per_second(
        self, *, model_parameters: int, method: str, accelerator: str, accelerator_count: int
    ) -> float | None:
        candidates = self._by_key.get((method, accelerator), ())
        ratio = self.max_parameter_ratio
        matches = [o for o in candidates if 1 / ratio <= o.model_parameters / model_parameters <= ratio]
        if not matches:
            return None
        # Runs on the same number of devices already include its communication overhead.
        same_count = [o for o in matches if o.accelerator_count == accelerator_count]
        pool = same_count or matches
        scaled = [
            o.tokens_per_second
            * (o.model_parameters / model_parameters)
            * (accelerator_count / o.accelerator_count)
            for o in pool
        ]
        return statistics.median(scaled)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Memory per device in GB (for a CPU type: the whole machine, all workers)."""

    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    total_gb: float
    capacity_gb: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


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
    memory: MemoryBreakdown
    model_parameters: int
    trainable_parameters: int
    tokens: int
    steps: int
    flops: float
    tokens_per_second: float
    # "model" (FLOPs over peak x utilisation) or "learned" (measured on comparable runs).
    throughput_source: str
    startup_seconds: float
    compute_seconds: float
    seconds: float
    usd_per_hour: float
    cost_usd: float
    on_demand_seconds: float
    on_demand_cost_usd: float
    spot_seconds: float | None
    spot_cost_usd: float | None
    expected_preemptions: float
    usd_per_million_tokens: float
    deadline_seconds: float | None
    meets_deadline: bool | None
    within_budget: bool | None

    @property
    def option(self) -> str:
        return f"{self.instance_type} spot" if self.spot else self.instance_type

    @property
    def reason(self) -> str:
        """One line a person can read: the plan, the run and its price."""
        if not self.fits:
            return (
                f"{self.option}: does not fit: needs {self.memory.total_gb:.1f} GB per device "
                f"({self.strategy}{', checkpointed' if self.gradient_checkpointing else ''}), "
                f"has {self.memory.capacity_gb:.1f} GB"
            )
        plan = self.strategy + (" + gradient checkpointing" if self.gradient_checkpointing else "")
        text = (
            f"{self.option}: {_device_text(self)}, {plan}, "
            f"{self.memory.total_gb:.1f}/{self.memory.capacity_gb:.1f} GB; "
            f"{self.tokens / 1e6:,.1f}M tokens at {self.tokens_per_second:,.0f} tok/s "
            f"({self.throughput_source}) -> {format_duration(self.seconds)}, {format_usd(self.cost_usd)}"
        )
        if self.spot:
            text += f" with {self.expected_preemptions:.2f} expected interruptions"
        return text

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
    if not math.isfinite(seconds):
        return "never"
    if seconds < 3600:
        return f"{max(seconds / 60, 1):.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_usd(usd: float) -> str:
    if usd < 10:
        return f"${usd:.2f}"
    return f"${usd:,.0f}" if usd >= 1000 else f"${usd:.1f}"


# --------------------------------------------------------------------------------------------
# Profiles: everything that does not depend on the job's token count, deadline or budget


@dataclass(frozen=True, slots=True)
class Profile:
    fits: bool
    strategy: str
    gradient_checkpointing: bool
    memory: MemoryBreakdown
    trainable_parameters: int
    flops_per_token: float
    tokens_per_second: float
    throughput_source: str
    startup_seconds: float
    restart_seconds: float
    tokens_per_step: int
    preemptions_per_second: float


def model_shape(model: ModelInfo) -> tuple[int, int, int]:
    """(layers, hidden, vocab), guessed from the parameter count when the config was not read.

    The guess assumes a decoder with ~12 x layers x hidden^2 parameters and hidden / layers ~ 128,
    the aspect ratio of most open models; it only feeds the activation-memory term.
    """
    if model.layers and model.hidden_size:
        return model.layers, model.hidden_size, model.vocab_size or 32_000
    hidden = max(64, round((model.parameters * 128 / 12) ** (1 / 3)))
    layers = max(1, round(model.parameters / (12 * hidden * hidden)))
    return layers, hidden, model.vocab_size or 32_000


def _profile_key(
    spec: JobSpec, itype: InstanceType, model: ModelInfo, learned: LearnedThroughput | None
) -> tuple:
    hp = spec.hyperparameters
    return (
        itype.name,
        model,
        spec.method,
        spec.task,
        hp.batch_size,
        hp.gradient_accumulation_steps,
        hp.seq_len,
        hp.lora_r if spec.method == "lora" else 0,
        learned,
    )


def profile(
    spec: JobSpec,
    itype: InstanceType,
    catalog: Catalog,
    model: ModelInfo,
    *,
    learned: LearnedThroughput | None = None,
) -> Profile:
    """The job-shape x instance-type part of an estimate (cached on the catalog)."""
    key = _profile_key(spec, itype, model, learned)
    cache = catalog.estimate_cache
    hit = cache.get(key)
    if hit is not None:
        return hit
    result = _compute_profile(spec, itype, catalog, model, learned)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = result
    return result


def _compute_profile(
    spec: JobSpec, itype: InstanceType, catalog: Catalog, model: ModelInfo, learned: LearnedThroughput | None
) -> Profile:
    c = catalog.constants
    hp = spec.hyperparameters
    params = model.parameters
    layers, hidden, vocab = model_shape(model)
    lora = spec.method == "lora"
    trainable = max(1, round(params * c.lora_trainable_fraction_at_r16 * hp.lora_r / 16)) if lora else params

    # Bytes of model state (weights, gradients, optimizer) before any sharding.
    if lora:
        weights = params * c.lora_frozen_bytes + trainable * c.lora_trainable_bytes_weights
        grads = trainable * c.lora_trainable_bytes_gradients
        optim = trainable * c.lora_trainable_bytes_optimizer
    else:
        weights = params * c.full_bytes_weights
        grads = params * c.full_bytes_gradients
        optim = params * c.full_bytes_optimizer

    micro_tokens = hp.batch_size * hp.seq_len  # batch_size is per worker
    logits = micro_tokens * vocab * c.logits_bytes_per_element if spec.task == "causal_lm" else 0.0
    act_full = c.activation_factor * micro_tokens * hidden * layers + logits
    act_ckpt = (
        c.checkpointed_activation_factor * micro_tokens * hidden * layers
        + c.activation_factor * micro_tokens * hidden
        + logits
    )

    base_flops = (c.lora_flops_per_param_token if lora else c.full_flops_per_param_token) * params
    base_flops += c.attention_flops_factor * layers * hp.seq_len * hidden
    if lora:
        base_flops += c.full_flops_per_param_token * trainable
    recompute = c.recompute_flops_per_param_token * params

    cpu = itype.kind == "cpu"
    n = itype.devices * itype.nodes if not cpu else 1
    if cpu:
        capacity = itype.ram_gb * GB * c.usable_memory_fraction
        overhead = c.cpu_framework_overhead_gb * GB * itype.workers
        replicas = itype.workers  # every worker process holds a full replica in the same RAM
    else:
        assert itype.accelerator_memory_gb is not None
        capacity = itype.accelerator_memory_gb * GB * c.usable_memory_fraction
        overhead = c.framework_overhead_gb * GB
        replicas = 1

    # Candidate plans, each with its memory per device and its slow-down relative to plain DDP.
    data_parallel = "ddp" if (n > 1 or itype.workers > 1) else "single"
    plans: list[tuple[str, bool, float, float, float, float]] = []
    for ckpt in (False, True):
        act = act_ckpt if ckpt else act_full
        plans.append(
            (data_parallel, ckpt, weights * replicas, grads * replicas, optim * replicas, act * replicas)
        )
    if n > 1:
        gathered = c.fsdp_gathered_layers * (params / layers) * 2  # bf16 all-gathered layers
        for ckpt in (False, True):
            act = act_ckpt if ckpt else act_full
            plans.append(("fsdp", ckpt, weights / n + gathered, grads / n, optim / n, act))

    scaling = 1.0
    if cpu:
        if itype.workers > 1:
            scaling = c.scaling_efficiency["host"]
        peak_flops = itype.vcpus * c.cpu_effective_gflops_per_vcpu * 1e9
        util = 1.0
    else:
        accel = catalog.accelerators[itype.accelerator]  # type: ignore[index]
        if n > 1:
            scaling = c.scaling_efficiency[itype.interconnect]
            if itype.nodes > 1:
                scaling *= c.scaling_efficiency["network"]
        peak_flops = n * accel.peak_bf16_tflops * 1e12
        util = c.utilisation(accel.name, itype.kind)
        saturating = c.small_model_params_per_peak_tflop * accel.peak_bf16_tflops
        util *= max(c.small_model_floor, min(1.0, (params / saturating) ** c.small_model_exponent))

    best: tuple[float, int] | None = None
    chosen = plans[-1]
    for index, plan in enumerate(plans):
        strategy, ckpt, w, g, o, a = plan
        if w + g + o + a + overhead > capacity:
            continue
        slowdown = (base_flops + (recompute if ckpt else 0.0)) / (
            c.fsdp_efficiency if strategy == "fsdp" else 1.0
        )
        if best is None or slowdown < best[0]:
            best = (slowdown, index)
            chosen = plan
    fits = best is not None
    strategy, ckpt, w, g, o, a = chosen
    memory = MemoryBreakdown(
        weights_gb=w / GB,
        gradients_gb=g / GB,
        optimizer_gb=o / GB,
        activations_gb=a / GB,
        overhead_gb=overhead / GB,
        total_gb=(w + g + o + a + overhead) / GB,
        capacity_gb=capacity / GB,
    )

    flops_per_token = base_flops + (recompute if ckpt else 0.0)
    effective = peak_flops * util * scaling * (c.fsdp_efficiency if strategy == "fsdp" else 1.0)
    tps = effective / flops_per_token
    source = "model"
    if learned is not None:
        accelerator, count = throughput_key(itype)
        measured = learned.tokens_per_second(
            model_parameters=params, method=spec.method, accelerator=accelerator, accelerator_count=count
        )
        if measured is not None:
            tps, source = measured, "learned"

    load_seconds = params * 2 / (c.model_load_gb_per_s * GB)
    startup = (
        c.startup_seconds_by_instance.get(itype.name, c.startup_seconds_by_kind[itype.kind]) + load_seconds
    )
    return Profile(
        fits=fits,
        strategy=strategy,
        gradient_checkpointing=ckpt,
        memory=memory,
        trainable_parameters=trainable,
        flops_per_token=flops_per_token,
        tokens_per_second=tps,
        throughput_source=source,
        startup_seconds=startup,
        restart_seconds=c.spot_restart_overhead_seconds + load_seconds,
        tokens_per_step=micro_tokens * hp.gradient_accumulation_steps * itype.workers * itype.nodes,
        preemptions_per_second=c.spot_preemptions_per_hour[itype.kind] / 3600,
    )


# --------------------------------------------------------------------------------------------
# Finishing: one job's run length and price


def job_tokens(spec: JobSpec, dataset_tokens: int, tokens_per_step: int) -> int:
    """Tokens the run processes: max_steps x tokens per step if set, else dataset x epochs."""
    hp = spec.hyperparameters
    if hp.max_steps is not None:
        return hp.max_steps * tokens_per_step
    return round(dataset_tokens * (hp.epochs or 1.0))


def _run_figures(
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
    spot: bool = False,
) -> Estimate:
    """Estimate ``spec`` on ``itype``, on-demand (default) or on spot capacity."""
    if spot and itype.spot_usd_per_hour is None:
        raise ValueError(f"{itype.name} has no spot price")
    prof = profile(spec, itype, catalog, model, learned=learned)
    return _finish(spec, itype, catalog, model, dataset_tokens, prof, now, spot)


def _finish(
    spec: JobSpec,
    itype: InstanceType,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    prof: Profile,
    now: datetime,
    spot: bool,
) -> Estimate:
    c = catalog.constants
    tokens = job_tokens(spec, dataset_tokens, prof.tokens_per_step)
    if tokens <= 0:
        raise EstimateInputError(
            "the run processes no tokens: give dataset_tokens or a readable training file",
            param="dataset_tokens",
        )
    compute, od_seconds, spot_seconds, (od_billed, spot_billed) = _run_figures(
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
    seconds = spot_seconds if spot else od_seconds
    cost = spot_cost if spot else od_cost
    assert cost is not None
    deadline = spec.policy.deadline
    deadline_seconds = (deadline - now).total_seconds() if deadline is not None else None
    budget = spec.policy.max_cost_usd
    accel = catalog.accelerator_for(itype)
    return Estimate(
        instance_type=itype.name,
        spot=spot,
        kind=itype.kind,
        accelerator=itype.accelerator,
        accelerator_family=accel.family if accel else None,
        accelerator_count=itype.accelerator_count,
        workers=itype.workers,
        method=spec.method,
        fits=prof.fits,
        strategy=prof.strategy,
        gradient_checkpointing=prof.gradient_checkpointing,
        memory=prof.memory,
        model_parameters=model.parameters,
        trainable_parameters=prof.trainable_parameters,
        tokens=tokens,
        steps=math.ceil(tokens / prof.tokens_per_step),
        flops=prof.flops_per_token * tokens,
        tokens_per_second=prof.tokens_per_second,
        throughput_source=prof.throughput_source,
        startup_seconds=prof.startup_seconds,
        compute_seconds=compute,
        seconds=seconds,
        usd_per_hour=itype.price(spot),
        cost_usd=cost,
        on_demand_seconds=od_seconds,
        on_demand_cost_usd=od_cost,
        spot_seconds=spot_secs,
        spot_cost_usd=spot_cost,
        expected_preemptions=prof.preemptions_per_second * spot_seconds if spot else 0.0,
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
    available: set[str] | frozenset[str] | None = None,
) -> list[Estimate]:
    """Every option: each catalog type (limited to ``available`` if given) on demand and, where
    priced, on spot. Order is catalog order, on-demand before spot; policies break ties by it."""
    now = now or datetime.now(UTC)
    out: list[Estimate] = []
    for itype in catalog.types:
        if available is not None and itype.name not in available:
            continue
        prof = profile(spec, itype, catalog, model, learned=learned)
        on_demand = _finish(spec, itype, catalog, model, dataset_tokens, prof, now, False)
        out.append(on_demand)
        if itype.spot_usd_per_hour is not None:
            out.append(_spot_variant(on_demand, itype, prof, spec))
    return out


def _spot_variant(on_demand: Estimate, itype: InstanceType, prof: Profile, spec: JobSpec) -> Estimate:
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
        usd_per_million_tokens=cost / on_demand.tokens * 1e6,
        meets_deadline=None if on_demand.deadline_seconds is None else seconds <= on_demand.deadline_seconds,
        within_budget=None if budget is None else cost <= budget,
    )


__all__ = [
    "Estimate",
    "LearnedThroughput",
    "MemoryBreakdown",
    "Profile",
    "ThroughputObservation",
    "estimate",
    "estimate_all",
    "format_duration",
    "format_usd",
    "job_tokens",
    "model_shape",
    "profile",
    "throughput_key",
]
