"""The job-shape x instance-type part of an estimate: memory plan, tokens per second, start-up.

A profile depends only on the job's shape (model, method, batch, sequence length) and the instance
type, not on its token count, deadline or budget. It is cached on the catalog, because a queue
holds many jobs of few shapes; finishing it for one job is a handful of arithmetic operations
(``estimator.run_figures``).

Memory: each candidate plan (a micro-batch size with the gradient accumulation that keeps the
job's effective batch, data-parallel replicas or FSDP shards, with or without gradient
checkpointing) is sized per device; the fastest plan that fits is kept, and the worker trains
with exactly its micro-batch, accumulation and checkpointing. Speed: peak FLOP/s x
utilisation x scaling over FLOPs per token, unless comparable runs measured it (``throughput``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from trainyard.platform.scheduling.catalog import Catalog
from trainyard.platform.scheduling.constants import EstimatorConstants
from trainyard.platform.scheduling.instance_types import InstanceType
from trainyard.platform.scheduling.model_info import ModelInfo
from trainyard.platform.scheduling.throughput import LearnedThroughput, throughput_key
from trainyard.platform.spec import JobSpec

GB = 1e9


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
class Profile:
    fits: bool
    strategy: str
    gradient_checkpointing: bool
    # Per worker: micro_batch_size x gradient_accumulation_steps is the job's batch_size x
    # gradient_accumulation_steps, whatever the plan.
    micro_batch_size: int
    gradient_accumulation_steps: int
    memory: MemoryBreakdown
    trainable_parameters: int
    flops_per_token: float
    tokens_per_second: float
    throughput_source: str
    # How many finished runs the learned figure came from (0: the FLOP model's).
    throughput_runs: int
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
        # By value: a learned throughput rebuilt from the same runs is the same key.
        learned.version if learned is not None else None,
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
    hit: Profile | None = cache.get(key)
    if hit is not None:
        return hit
    result = _compute_profile(spec, itype, catalog, model, learned)
    cache.put(key, result)
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

    plan = _best_plan(
        spec,
        c,
        weights=weights,
        grads=grads,
        optim=optim,
        shape=(layers, hidden, vocab),
        devices=n,
        replicas=replicas,
        data_parallel="ddp" if (n > 1 or itype.workers > 1) else "single",
        overhead=overhead,
        capacity=capacity,
        base_flops=base_flops,
        recompute=recompute,
        params=params,
    )
    fits, strategy, ckpt = plan.fits, plan.strategy, plan.gradient_checkpointing
    w, g, o, a = plan.weights, plan.gradients, plan.optimizer, plan.activations
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
    effective = (
        peak_flops
        * util
        * scaling
        * plan.micro_efficiency
        * (c.fsdp_efficiency if strategy == "fsdp" else 1.0)
    )
    tps = effective / flops_per_token
    source, runs = "model", 0
    if learned is not None:
        accelerator, count = throughput_key(itype)
        measured = learned.lookup(
            model_parameters=params, method=spec.method, accelerator=accelerator, accelerator_count=count
        )
        if measured is not None:
            # What comparable runs did replaces what the FLOP model says, from the first one on.
            tps, source, runs = measured.tokens_per_second, "learned", measured.runs

    load_seconds = params * 2 / (c.model_load_gb_per_s * GB)
    startup = (
        c.startup_seconds_by_instance.get(itype.name, c.startup_seconds_by_kind[itype.kind]) + load_seconds
    )
    return Profile(
        fits=fits,
        strategy=strategy,
        gradient_checkpointing=ckpt,
        micro_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        memory=memory,
        trainable_parameters=trainable,
        flops_per_token=flops_per_token,
        tokens_per_second=tps,
        throughput_source=source,
        throughput_runs=runs,
        startup_seconds=startup,
        restart_seconds=c.spot_restart_overhead_seconds + load_seconds,
        # The plan keeps micro-batch x accumulation at what the job asked for, so a step is the same.
        tokens_per_step=hp.batch_size
        * hp.gradient_accumulation_steps
        * hp.seq_len
        * itype.workers
        * itype.nodes,
        preemptions_per_second=c.spot_preemptions_per_hour[itype.kind] / 3600,
    )


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """One way to lay a job out on a device: bytes per device and what it does to speed."""

    fits: bool
    strategy: str
    gradient_checkpointing: bool
    micro_batch_size: int
    gradient_accumulation_steps: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    # Utilisation relative to the job's own micro-batch (1.0 there, below it for smaller ones).
    micro_efficiency: float
    # Training FLOP/s needed per token relative to the fastest conceivable plan: lower is faster.
    slowdown: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def micro_batch_sizes(batch_size: int) -> list[int]:
    """The micro-batches a plan may use, largest first: the divisors of the job's per-worker
    batch, so that micro-batch x accumulation is exactly the batch it asked for."""
    small = [d for d in range(1, math.isqrt(batch_size) + 1) if batch_size % d == 0]
    return sorted({*small, *(batch_size // d for d in small)}, reverse=True)


def _best_plan(
    spec: JobSpec,
    c: EstimatorConstants,
    *,
    weights: float,
    grads: float,
    optim: float,
    shape: tuple[int, int, int],
    devices: int,
    replicas: int,
    data_parallel: str,
    overhead: float,
    capacity: float,
    base_flops: float,
    recompute: float,
    params: int,
) -> MemoryPlan:
    """The fastest memory plan that fits: over micro-batch sizes (with the accumulation that keeps
    the effective batch), gradient checkpointing, and replicated or sharded state. Ties go to the
    larger micro-batch, then to replicas over shards. When nothing fits, the plan that needs the
    least memory, so the reason can say how far off it is."""
    hp = spec.hyperparameters
    layers, hidden, vocab = shape
    requested = _micro_efficiency(c, hp.batch_size * hp.seq_len)
    shard = devices > 1
    gathered = c.fsdp_gathered_layers * (params / layers) * 2 if shard else 0.0  # bf16 all-gathered layers
    best: MemoryPlan | None = None
    smallest: MemoryPlan | None = None
    for micro in micro_batch_sizes(hp.batch_size):
        tokens = micro * hp.seq_len
        logits = tokens * vocab * c.logits_bytes_per_element if spec.task == "causal_lm" else 0.0
        act_full = c.activation_factor * tokens * hidden * layers + logits
        act_ckpt = (
            c.checkpointed_activation_factor * tokens * hidden * layers
            + c.activation_factor * tokens * hidden
            + logits
        )
        efficiency = _micro_efficiency(c, tokens) / requested
        accumulation = hp.batch_size * hp.gradient_accumulation_steps // micro
        layouts = [(data_parallel, weights * replicas, grads * replicas, optim * replicas, replicas)]
        if shard:
            layouts.append(("fsdp", weights / devices + gathered, grads / devices, optim / devices, 1))
        for strategy, w, g, o, copies in layouts:
            for ckpt in (False, True):
                flops = base_flops + (recompute if ckpt else 0.0)
                speed = efficiency * (c.fsdp_efficiency if strategy == "fsdp" else 1.0)
                plan = MemoryPlan(
                    fits=False,
                    strategy=strategy,
                    gradient_checkpointing=ckpt,
                    micro_batch_size=micro,
                    gradient_accumulation_steps=accumulation,
                    weights=w,
                    gradients=g,
                    optimizer=o,
                    activations=(act_ckpt if ckpt else act_full) * copies,
                    micro_efficiency=efficiency,
                    slowdown=flops / base_flops / speed,
                )
                if smallest is None or plan.total < smallest.total:
                    smallest = plan
                if plan.total + overhead > capacity:
                    continue
                if best is None or plan.slowdown < best.slowdown:
                    best = plan
    if best is not None:
        return replace(best, fits=True)
    assert smallest is not None
    return smallest


def _micro_efficiency(c: EstimatorConstants, tokens: int) -> float:
    return float(min(1.0, tokens / c.micro_batch_saturating_tokens) ** c.micro_batch_exponent)
