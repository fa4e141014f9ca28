"""Choose an option for a job by its policy: cheapest, fastest, deadline or budget.

Eligibility comes first and is the same for every objective: the pinned instance type, the allowed
accelerators, the spot choice (never: on-demand rows only; always: spot rows only; auto: both) and
the pools that exist (``available``) narrow the options; then only options whose memory plan fits
remain; then, when the policy sets ``max_cost_usd``, only those within it. Each step that leaves
nothing raises ``NoFeasibleOption`` with its own code, so the user learns which constraint bit.

Ties are broken by the next criterion (cost for time objectives, time for cost objectives) and
then by option order (catalog order, on-demand before spot), so a decision is reproducible.
``choose_many`` applies the same rules to many jobs at once over arrays, for planning a queue.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from trainyard.platform.scheduling.catalog import Catalog, InstanceType
from trainyard.platform.scheduling.estimator import (
    Estimate,
    LearnedThroughput,
    _run_figures,
    estimate_all,
    format_duration,
    format_usd,
    profile,
)
from trainyard.platform.scheduling.model_info import ModelInfo
from trainyard.platform.spec import JobSpec


class NoFeasibleOption(Exception):
    """No option satisfies the job's constraints. ``code`` is stable; ``param`` names the field."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class Decision:
    chosen: Estimate
    # The other eligible options, best first by the same objective.
    alternatives: tuple[Estimate, ...]
    objective: str
    reason: str

    @property
    def instance_type(self) -> str:
        return self.chosen.instance_type

    @property
    def spot(self) -> bool:
        return self.chosen.spot

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "instance_type": self.chosen.instance_type,
            "spot": self.chosen.spot,
            "reason": self.reason,
            "chosen": self.chosen.to_dict(),
            "alternatives": [a.to_dict() for a in self.alternatives],
        }


# --------------------------------------------------------------------------------------------
# Eligibility


@functools.lru_cache(maxsize=4096)
def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def accelerator_allowed(
    allowed: Sequence[str] | None, kind: str, accelerator: str | None, family: str | None
) -> bool:
    """Whether an option passes ``allowed_accelerators``.

    An entry matches an accelerator's name ("A100-80GB") or family ("A100"), case and punctuation
    aside; "cpu", "gpu" and "tpu" match by kind.
    """
    if allowed is None:
        return True
    wanted = {_norm(a) for a in allowed}
    if "cpu" in wanted and kind == "cpu":
        return True
    if "gpu" in wanted and kind in ("gpu", "multi_gpu"):
        return True
    if "tpu" in wanted and kind == "tpu":
        return True
    return accelerator is not None and (
        _norm(accelerator) in wanted or (family is not None and _norm(family) in wanted)
    )


def _filter_eligible(
    spec: JobSpec, options: Sequence[Estimate], available: set[str] | frozenset[str] | None
) -> list[tuple[int, Estimate]]:
    policy = spec.policy
    pin = spec.instance_type
    if pin is not None and not any(o.instance_type == pin for o in options):
        raise NoFeasibleOption(
            f"instance type {pin!r} is not among the options"
            + (" (no pool runs it)" if available is not None and pin not in available else ""),
            code="instance_type_unavailable",
            param="instance_type",
        )
    out = []
    for index, option in enumerate(options):
        if pin is not None and option.instance_type != pin:
            continue
        if available is not None and option.instance_type not in available:
            continue
        if policy.spot == "never" and option.spot:
            continue
        if policy.spot == "always" and not option.spot:
            continue
        if not accelerator_allowed(
            policy.allowed_accelerators, option.kind, option.accelerator, option.accelerator_family
        ):
            continue
        out.append((index, option))
    if not out:
        raise NoFeasibleOption(
            _no_eligible_message(spec, available), code="no_eligible_instance", param="policy"
        )
    return out


def _no_eligible_message(spec: JobSpec, available: set[str] | frozenset[str] | None) -> str:
    parts = []
    if spec.instance_type is not None:
        parts.append(f"instance_type {spec.instance_type!r}")
    if spec.policy.allowed_accelerators is not None:
        parts.append(f"allowed_accelerators {spec.policy.allowed_accelerators}")
    if spec.policy.spot != "auto":
        parts.append(
            f"spot {spec.policy.spot!r}"
            + (" (only types with a spot price)" if spec.policy.spot == "always" else "")
        )
    if available is not None:
        parts.append(f"the pools that exist ({', '.join(sorted(available)) or 'none'})")
    return "no instance type matches " + (", ".join(parts) if parts else "the job") + "; relax one of them"


# --------------------------------------------------------------------------------------------
# Choosing


def _cost_key(item: tuple[int, Estimate]) -> tuple[float, float, int]:
    index, e = item
    return (e.cost_usd, e.seconds, index)


def _time_key(item: tuple[int, Estimate]) -> tuple[float, float, int]:
    index, e = item
    return (e.seconds, e.cost_usd, index)


def choose(
    spec: JobSpec, options: Sequence[Estimate], *, available: set[str] | frozenset[str] | None = None
) -> Decision:
    """Pick one option for ``spec`` by its policy, or raise NoFeasibleOption."""
    policy = spec.policy
    eligible = _filter_eligible(spec, options, available)
    fitting = [item for item in eligible if item[1].fits]
    if not fitting:
        smallest = min((e for _, e in eligible), key=lambda e: e.memory.total_gb - e.memory.capacity_gb)
        raise NoFeasibleOption(
            f"no eligible instance type has the memory for this job; closest: {smallest.reason}",
            code="no_instance_fits",
            param="instance_type" if spec.instance_type else "base_model",
        )
    budget = policy.max_cost_usd
    pool = fitting
    if budget is not None:
        pool = [item for item in fitting if item[1].cost_usd <= budget]
        if not pool:
            cheapest = min(fitting, key=_cost_key)[1]
            raise NoFeasibleOption(
                f"no option runs this job within the {format_usd(budget)} budget; the cheapest is "
                f"{cheapest.option} at {format_usd(cheapest.cost_usd)} ({format_duration(cheapest.seconds)})",
                code="budget_infeasible",
                param="policy.max_cost_usd",
            )

    objective = policy.objective
    missed = False
    if objective == "cheapest":
        ranked = sorted(pool, key=_cost_key)
    elif objective in ("fastest", "budget"):
        ranked = sorted(pool, key=_time_key)
    else:  # deadline
        in_time = [item for item in pool if item[1].meets_deadline]
        if in_time:
            late = [item for item in pool if not item[1].meets_deadline]
            ranked = sorted(in_time, key=_cost_key) + sorted(late, key=_time_key)
        else:
            missed = True
            ranked = sorted(pool, key=_time_key)
    chosen = ranked[0][1]
    alternatives = tuple(e for _, e in ranked[1:])
    excluded = [e for _, e in fitting if budget is not None and e.cost_usd > budget]
    reason = _reason(spec, chosen, alternatives, excluded, missed)
    return Decision(chosen=chosen, alternatives=alternatives, objective=objective, reason=reason)


def _reason(
    spec: JobSpec,
    chosen: Estimate,
    alternatives: tuple[Estimate, ...],
    over_budget: list[Estimate],
    missed: bool,
) -> str:
    policy = spec.policy
    head = f"{chosen.option}: {format_usd(chosen.cost_usd)}, {format_duration(chosen.seconds)}"
    if chosen.spot:
        head += f" (spot, {chosen.expected_preemptions:.1f} expected interruptions)"
    deadline_s = chosen.deadline_seconds
    if policy.objective == "deadline" and deadline_s is not None:
        window = format_duration(max(deadline_s, 0.0))
        if missed:
            head += (
                f", misses the {window} deadline by {format_duration(chosen.seconds - deadline_s)}: "
                "no option finishes in time, so the fastest was chosen"
            )
        else:
            head += f", meets the {window} deadline at the lowest cost"
    elif policy.objective == "budget":
        head += f", the fastest within the {format_usd(policy.max_cost_usd or 0)} budget"
    elif policy.objective == "cheapest":
        head += ", the cheapest whole run"
    else:
        head += ", the fastest run"

    contrast = ""
    faster = [a for a in alternatives if a.seconds < chosen.seconds]
    cheaper = [a for a in alternatives if a.cost_usd < chosen.cost_usd]
    faster_over = [a for a in over_budget if a.seconds < chosen.seconds]
    if policy.objective in ("cheapest", "deadline") and faster:
        alt = min(faster, key=lambda a: (a.seconds, a.cost_usd))
        contrast = (
            f"{alt.option} would take {format_duration(alt.seconds)} but cost {format_usd(alt.cost_usd)}"
        )
    elif policy.objective == "budget" and faster_over:
        alt = min(faster_over, key=lambda a: (a.seconds, a.cost_usd))
        contrast = (
            f"{alt.option} would take {format_duration(alt.seconds)} "
            f"but cost {format_usd(alt.cost_usd)}, over budget"
        )
    elif policy.objective in ("fastest", "budget") and cheaper:
        alt = min(cheaper, key=lambda a: (a.cost_usd, a.seconds))
        contrast = (
            f"{alt.option} would cost {format_usd(alt.cost_usd)} but take {format_duration(alt.seconds)}"
        )
    return f"{head}; {contrast}" if contrast else head


def decide(
    spec: JobSpec,
    catalog: Catalog,
    model: ModelInfo,
    dataset_tokens: int,
    *,
    learned: LearnedThroughput | None = None,
    now: datetime | None = None,
    available: set[str] | frozenset[str] | None = None,
) -> Decision:
    """``estimate_all`` then ``choose``: the one call the scheduler needs for one job."""
    if spec.instance_type is not None and spec.instance_type not in catalog:
        raise NoFeasibleOption(
            f"unknown instance type {spec.instance_type!r}; known: {', '.join(catalog.names)}",
            code="instance_type_unknown",
            param="instance_type",
        )
    options = estimate_all(spec, catalog, model, dataset_tokens, learned, now, available)
    return choose(spec, options, available=available)


# --------------------------------------------------------------------------------------------
# Many jobs at once


class BatchChoice(NamedTuple):
    """``choose_many``'s answer for one job: the option, or the error code that ``choose`` raises."""

    instance_type: str | None
    spot: bool
    seconds: float
    cost_usd: float
    meets_deadline: bool | None
    error_code: str | None = None


_OBJECTIVE_CODE = {"cheapest": 0, "fastest": 1, "deadline": 2, "budget": 3}


def choose_many(
    jobs: Sequence[tuple[JobSpec, ModelInfo, int]],
    catalog: Catalog,
    *,
    learned: LearnedThroughput | None = None,
    now: datetime | None = None,
    available: set[str] | frozenset[str] | None = None,
) -> list[BatchChoice]:
    """Decide for many ``(spec, model, dataset_tokens)`` jobs at once, without building Estimates.

    Same rules and the same tie-breaks as ``estimate_all`` + ``choose`` (tested to agree), but the
    per-option arithmetic runs over a jobs x options array, and the memory and throughput work is
    shared between jobs of one shape. Errors come back as ``error_code`` instead of raising.
    """
    import numpy as np

    now = now or datetime.now(UTC)
    c = catalog.constants
    types: list[InstanceType] = [t for t in catalog.types if available is None or t.name in available]
    # Options in estimate_all's order: each type on demand, then on spot where priced.
    opt_type: list[int] = []
    opt_spot: list[bool] = []
    for ti, t in enumerate(types):
        opt_type.append(ti)
        opt_spot.append(False)
        if t.spot_usd_per_hour is not None:
            opt_type.append(ti)
            opt_spot.append(True)
    n_jobs, n_opts = len(jobs), len(opt_type)
    if n_jobs == 0:
        return []
    if n_opts == 0:
        return [BatchChoice(None, False, float("nan"), float("nan"), None, "no_eligible_instance")] * n_jobs
    o_type = np.array(opt_type)
    o_spot = np.array(opt_spot)
    o_price = np.array([types[ti].price(sp) for ti, sp in zip(opt_type, opt_spot, strict=True)])
    o_names = [types[ti].name for ti in opt_type]

    # Per job shape: one row of per-type figures, shared by every job of that shape.
    shape_rows: dict[tuple, int] = {}
    rows_fits: list[list[bool]] = []
    rows_tps: list[list[float]] = []
    rows_startup: list[list[float]] = []
    rows_restart: list[list[float]] = []
    rows_tps_step: list[list[int]] = []
    rows_rate: list[list[float]] = []
    # Per-job scalars go to Python lists first: one array conversion beats 10,000 item writes.
    inf = float("inf")
    shape_of: list[int] = []
    epoch_tokens_of: list[float] = []
    max_steps_of: list[float] = []
    every_steps_of: list[float] = []
    deadline_of: list[float] = []
    budget_of: list[float] = []
    objective_of: list[int] = []
    mask_of: list[int] = []
    masks: dict[tuple, int] = {}
    mask_rows: list[list[bool]] = []
    mask_pin: list[int] = []  # 0: no pin problem, 1: pinned type has no option here, 2: unknown type

    for spec, model, dataset_tokens in jobs:
        hp = spec.hyperparameters
        policy = spec.policy
        # id(model) is stable here: ``jobs`` keeps every model alive for the whole call.
        key = (
            id(model),
            spec.method,
            spec.task,
            hp.batch_size,
            hp.gradient_accumulation_steps,
            hp.seq_len,
            hp.lora_r if spec.method == "lora" else 0,
        )
        row = shape_rows.get(key)
        if row is None:
            row = shape_rows[key] = len(rows_fits)
            profs = [profile(spec, t, catalog, model, learned=learned) for t in types]
            rows_fits.append([p.fits for p in profs])
            rows_tps.append([p.tokens_per_second for p in profs])
            rows_startup.append([p.startup_seconds for p in profs])
            rows_restart.append([p.restart_seconds for p in profs])
            rows_tps_step.append([p.tokens_per_step for p in profs])
            rows_rate.append([p.preemptions_per_second for p in profs])
        shape_of.append(row)
        if hp.max_steps is not None:
            max_steps_of.append(hp.max_steps)
            epoch_tokens_of.append(0.0)
        else:
            max_steps_of.append(0.0)
            epoch_tokens_of.append(round(dataset_tokens * (hp.epochs or 1.0)))
        every_steps_of.append(spec.checkpoint.every_steps)
        deadline_of.append((policy.deadline - now).total_seconds() if policy.deadline is not None else inf)
        budget_of.append(policy.max_cost_usd if policy.max_cost_usd is not None else inf)
        objective_of.append(_OBJECTIVE_CODE[policy.objective])
        allowed = policy.allowed_accelerators
        mkey = (spec.instance_type, tuple(allowed) if allowed is not None else None, policy.spot)
        mask_index = masks.get(mkey)
        if mask_index is None:
            mask_index = masks[mkey] = len(mask_rows)
            mask_rows.append(_option_mask(spec, types, opt_type, opt_spot, catalog))
            pin = spec.instance_type
            mask_pin.append(0 if pin is None or pin in o_names else 2 if pin not in catalog else 1)
        mask_of.append(mask_index)

    job_shape = np.array(shape_of)
    tokens_epoch = np.array(epoch_tokens_of, dtype=np.float64)
    max_steps = np.array(max_steps_of, dtype=np.float64)
    every_steps = np.array(every_steps_of, dtype=np.float64)
    deadline = np.array(deadline_of)
    has_deadline = np.isfinite(deadline)
    budget = np.array(budget_of)
    objective = np.array(objective_of)
    job_mask_index = np.array(mask_of)
    job_mask = np.array(mask_rows, dtype=bool)[job_mask_index]
    pin_missing = np.array(mask_pin, dtype=np.int8)[job_mask_index]

    # jobs x options figures, gathered from the shape rows.
    by_type = o_type[None, :]
    shp = job_shape[:, None]
    fits = np.array(rows_fits, dtype=bool)[shp, by_type]
    tps = np.array(rows_tps)[shp, by_type]
    startup = np.array(rows_startup)[shp, by_type]
    restart = np.array(rows_restart)[shp, by_type]
    tokens_per_step = np.array(rows_tps_step, dtype=np.float64)[shp, by_type]
    rate = np.array(rows_rate)[shp, by_type]
    tokens = np.where(max_steps[:, None] > 0, max_steps[:, None] * tokens_per_step, tokens_epoch[:, None])

    with np.errstate(divide="ignore", invalid="ignore"):
        _, on_demand, spot, (od_billed, spot_billed) = _run_figures(
            tokens,
            tps,
            startup,
            restart,
            tokens_per_step,
            every_steps[:, None],
            rate,
            c.min_billed_seconds,
            c.spot_max_overhead_fraction,
            minimum=np.minimum,
            maximum=np.maximum,
        )
    seconds = np.where(o_spot[None, :], spot, on_demand)
    cost = np.where(o_spot[None, :], spot_billed, od_billed) / 3600 * o_price[None, :]
    no_tokens = (tokens <= 0).all(axis=1)

    eligible = job_mask
    fitting = eligible & fits
    affordable = fitting & (cost <= budget[:, None])
    meets = seconds <= deadline[:, None]

    is_deadline = objective == 2
    in_time = affordable & meets
    deadline_ok = is_deadline & in_time.any(axis=1)
    by_time = (objective == 1) | (objective == 3) | (is_deadline & ~deadline_ok)
    pool = np.where(deadline_ok[:, None], in_time, affordable)
    primary = np.where(by_time[:, None], seconds, cost)
    secondary = np.where(by_time[:, None], cost, seconds)
    primary = np.where(pool, primary, np.inf)
    best = primary.min(axis=1)
    tied = pool & (primary == best[:, None])
    secondary = np.where(tied, secondary, np.inf)
    pick = secondary.argmin(axis=1)

    # Python lists: the loop below reads them element by element.
    any_eligible: list[bool] = np.asarray(eligible.any(axis=1)).tolist()
    any_fit: list[bool] = fitting.any(axis=1).tolist()
    any_affordable: list[bool] = affordable.any(axis=1).tolist()
    rows = np.arange(n_jobs)
    pick_seconds: list[float] = seconds[rows, pick].tolist()
    pick_cost: list[float] = cost[rows, pick].tolist()
    pick_meets: list[bool] = meets[rows, pick].tolist()
    picks: list[int] = pick.tolist()
    missing: list[int] = pin_missing.tolist()
    empty: list[bool] = np.asarray(no_tokens).tolist()
    dated: list[bool] = has_deadline.tolist()
    spot_of: list[bool] = o_spot.tolist()
    out: list[BatchChoice] = []
    nan = float("nan")
    for j in range(n_jobs):
        if missing[j]:
            code = "instance_type_unknown" if missing[j] == 2 else "instance_type_unavailable"
        elif empty[j]:
            code = "estimate_input_missing"
        elif not any_eligible[j]:
            code = "no_eligible_instance"
        elif not any_fit[j]:
            code = "no_instance_fits"
        elif not any_affordable[j]:
            code = "budget_infeasible"
        else:
            o = picks[j]
            out.append(
                BatchChoice(
                    o_names[o],
                    spot_of[o],
                    pick_seconds[j],
                    pick_cost[j],
                    pick_meets[j] if dated[j] else None,
                )
            )
            continue
        out.append(BatchChoice(None, False, nan, nan, None, code))
    return out


def _option_mask(
    spec: JobSpec, types: list[InstanceType], opt_type: list[int], opt_spot: list[bool], catalog: Catalog
) -> list[bool]:
    policy = spec.policy
    mask = []
    for ti, sp in zip(opt_type, opt_spot, strict=True):
        t = types[ti]
        ok = spec.instance_type is None or t.name == spec.instance_type
        ok = ok and not (policy.spot == "never" and sp) and not (policy.spot == "always" and not sp)
        if ok and policy.allowed_accelerators is not None:
            accel = catalog.accelerator_for(t)
            ok = accelerator_allowed(
                policy.allowed_accelerators, t.kind, t.accelerator, accel.family if accel else None
            )
        mask.append(ok)
    return mask


__all__ = [
    "BatchChoice",
    "Decision",
    "NoFeasibleOption",
    "accelerator_allowed",
    "choose",
    "choose_many",
    "decide",
    "estimate_all",
]
