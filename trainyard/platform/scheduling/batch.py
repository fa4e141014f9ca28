"""Choose for many jobs at once: a whole queue planned in one pass, without building Estimates.

The rules are ``ranking``'s, as for one job (``policies.choose``); what differs is the arithmetic.
Each job's figures for every option come from ``profiles`` (shared by the jobs of one shape) and
``estimator.run_figures`` over a jobs x options array, so 10,000 jobs take a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from trainyard.platform.scheduling.catalog import Catalog
from trainyard.platform.scheduling.estimator import run_figures
from trainyard.platform.scheduling.instance_types import InstanceType
from trainyard.platform.scheduling.model_info import ModelInfo
from trainyard.platform.scheduling.profiles import profile
from trainyard.platform.scheduling.ranking import OBJECTIVES, option_allowed, rank
from trainyard.platform.scheduling.throughput import LearnedThroughput
from trainyard.platform.spec import JobSpec


class BatchChoice(NamedTuple):
    """``choose_many``'s answer for one job: the option, or the error code that planning it alone
    (``estimate_all`` + ``choose``) gives."""

    instance_type: str | None
    spot: bool
    seconds: float
    cost_usd: float
    meets_deadline: bool | None
    error_code: str | None = None


def choose_many(
    jobs: Sequence[tuple[JobSpec, ModelInfo, int]],
    catalog: Catalog,
    *,
    learned: LearnedThroughput | None = None,
    now: datetime | None = None,
    available: set[str] | frozenset[str] | None = None,
) -> list[BatchChoice]:
    """Decide for many ``(spec, model, dataset_tokens)`` jobs at once, as ``choose`` does for each
    over ``estimate_all``'s options (tested to agree). Errors come back as ``error_code``."""
    now = now or datetime.now(UTC)
    c = catalog.constants
    # Types no pool runs are never eligible, so they are not figured at all.
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
    families = {a.name: a.family for a in catalog.accelerators.values()}
    o_family = [families.get(types[ti].accelerator or "") for ti in opt_type]

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
    unknown_pin: list[bool] = []

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
        objective_of.append(OBJECTIVES.index(policy.objective))
        allowed = policy.allowed_accelerators
        mkey = (spec.instance_type, tuple(allowed) if allowed is not None else None, policy.spot)
        mask_index = masks.get(mkey)
        if mask_index is None:
            mask_index = masks[mkey] = len(mask_rows)
            mask_rows.append(
                [
                    option_allowed(
                        spec,
                        available,
                        instance_type=o_names[o],
                        spot=opt_spot[o],
                        kind=types[opt_type[o]].kind,
                        accelerator=types[opt_type[o]].accelerator,
                        family=o_family[o],
                    )
                    for o in range(n_opts)
                ]
            )
            unknown_pin.append(spec.instance_type is not None and spec.instance_type not in catalog)
        mask_of.append(mask_index)

    job_shape = np.array(shape_of)
    tokens_epoch = np.array(epoch_tokens_of, dtype=np.float64)
    max_steps = np.array(max_steps_of, dtype=np.float64)
    every_steps = np.array(every_steps_of, dtype=np.float64)
    deadline = np.array(deadline_of)
    job_mask_index = np.array(mask_of)
    eligible = np.array(mask_rows, dtype=bool)[job_mask_index]

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
        _, on_demand, spot, (od_billed, spot_billed) = run_figures(
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

    ranking = rank(
        eligible,
        fits,
        seconds,
        cost,
        budget=np.array(budget_of),
        deadline=deadline,
        objective=np.array(objective_of),
    )
    pick = ranking.best()

    # Python lists: the loop below reads them element by element.
    rows = np.arange(n_jobs)
    pick_seconds: list[float] = seconds[rows, pick].tolist()
    pick_cost: list[float] = cost[rows, pick].tolist()
    pick_meets: list[bool] = (seconds[rows, pick] <= deadline).tolist()
    picks: list[int] = pick.tolist()
    unknown: list[bool] = np.array(unknown_pin, dtype=bool)[job_mask_index].tolist()
    empty: list[bool] = np.asarray((tokens <= 0).all(axis=1)).tolist()
    dated: list[bool] = np.isfinite(deadline).tolist()
    out: list[BatchChoice] = []
    nan = float("nan")
    for j in range(n_jobs):
        # The order planning one job meets them: the pin, the inputs, then the policy's rules.
        code = (
            "instance_type_unknown"
            if unknown[j]
            else "estimate_input_missing"
            if empty[j]
            else ranking.codes[j]
        )
        if code is not None:
            out.append(BatchChoice(None, False, nan, nan, None, code))
            continue
        o = picks[j]
        out.append(
            BatchChoice(
                o_names[o], opt_spot[o], pick_seconds[j], pick_cost[j], pick_meets[j] if dated[j] else None
            )
        )
    return out


__all__ = ["BatchChoice", "choose_many"]
