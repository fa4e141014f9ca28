"""Choose an option for one job by its policy: cheapest, fastest, deadline or budget.

The rules (eligibility, fit, budget, the order each objective wants) are ``ranking``'s, the same
ones ``batch.choose_many`` applies to a whole queue. Here they yield a ``Decision``: the chosen
option, the others best first, and a sentence that says why; or ``NoFeasibleOption`` with the
code of the constraint that left nothing and a message that names what came closest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trainyard.platform.scheduling.estimator import Estimate, format_duration, format_usd
from trainyard.platform.scheduling.execution import not_runnable_reason
from trainyard.platform.scheduling.ranking import OBJECTIVES, option_allowed, rank
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


def choose(
    spec: JobSpec, options: Sequence[Estimate], *, available: set[str] | frozenset[str] | None = None
) -> Decision:
    """Pick one of ``options`` (``estimate_all``'s list: every catalog type) for ``spec`` by its
    policy, among the types in ``available`` (None: all); or raise NoFeasibleOption."""
    pin = spec.instance_type
    if pin is not None and all(o.instance_type != pin for o in options):
        known = ", ".join(dict.fromkeys(o.instance_type for o in options))
        raise NoFeasibleOption(
            f"unknown instance type {pin!r}; known: {known}",
            code="instance_type_unknown",
            param="instance_type",
        )
    policy = spec.policy
    allowed = [
        option_allowed(
            spec,
            available,
            instance_type=o.instance_type,
            spot=o.spot,
            kind=o.kind,
            accelerator=o.accelerator,
            family=o.accelerator_family,
        )
        for o in options
    ]
    inf = float("inf")
    budget = policy.max_cost_usd if policy.max_cost_usd is not None else inf
    deadline = next((o.deadline_seconds for o in options if o.deadline_seconds is not None), inf)
    ranking = rank(
        _row(allowed, bool),
        _row([o.fits for o in options], bool),
        _row([o.seconds for o in options], np.float64),
        _row([o.cost_usd for o in options], np.float64),
        budget=np.array([budget]),
        deadline=np.array([deadline]),
        objective=np.array([OBJECTIVES.index(policy.objective)]),
    )
    code = ranking.codes[0]
    if code is not None:
        raise _infeasible(spec, options, allowed, ranking.fitting[0].tolist(), code, available)
    ranked = [options[i] for i in ranking.order(0)]
    chosen, alternatives = ranked[0], tuple(ranked[1:])
    over_budget = [
        o for o, fit in zip(options, ranking.fitting[0].tolist(), strict=True) if fit and o.cost_usd > budget
    ]
    reason = _reason(spec, chosen, alternatives, over_budget, bool(ranking.missed[0]))
    return Decision(chosen=chosen, alternatives=alternatives, objective=policy.objective, reason=reason)


def _row(values: list[Any], dtype: Any) -> NDArray[Any]:
    """One job's figures as the 1 x options table ``rank`` takes."""
    return np.array(values, dtype=dtype).reshape(1, len(values))


def _infeasible(
    spec: JobSpec,
    options: Sequence[Estimate],
    allowed: list[bool],
    fitting: list[bool],
    code: str,
    available: set[str] | frozenset[str] | None,
) -> NoFeasibleOption:
    """The error for ``rank``'s code, naming what came closest."""
    if code == "no_eligible_instance":
        pinned = next((o for o in options if o.instance_type == spec.instance_type), None)
        why = not_runnable_reason(pinned.kind) if pinned is not None else None
        if why is not None:
            return NoFeasibleOption(
                f"instance type {spec.instance_type!r} cannot run jobs here: {why}",
                code=code,
                param="instance_type",
            )
        return NoFeasibleOption(_no_eligible_message(spec, available), code=code, param="policy")
    if code == "no_instance_fits":
        eligible = [o for o, ok in zip(options, allowed, strict=True) if ok]
        smallest = min(eligible, key=lambda e: e.memory.total_gb - e.memory.capacity_gb)
        return NoFeasibleOption(
            f"no eligible instance type has the memory for this job; closest: {smallest.reason}",
            code=code,
            param="instance_type" if spec.instance_type else "base_model",
        )
    budget = spec.policy.max_cost_usd or 0.0
    fitting_options = [o for o, fit in zip(options, fitting, strict=True) if fit]
    cheapest = min(fitting_options, key=lambda e: (e.cost_usd, e.seconds))
    return NoFeasibleOption(
        f"no option runs this job within the {format_usd(budget)} budget; the cheapest is "
        f"{cheapest.option} at {format_usd(cheapest.cost_usd)} ({format_duration(cheapest.seconds)})",
        code=code,
        param="policy.max_cost_usd",
    )


def _no_eligible_message(spec: JobSpec, available: set[str] | frozenset[str] | None) -> str:
    parts = []
    if spec.instance_type is not None:
        parts.append(f"instance_type {spec.instance_type!r}")
    if spec.policy.allowed_accelerators is not None:
        parts.append(
            f"allowed_accelerators {spec.policy.allowed_accelerators} (TPU types do not run here yet)"
        )
    if spec.policy.spot != "auto":
        parts.append(
            f"spot {spec.policy.spot!r}"
            + (" (only types with a spot price)" if spec.policy.spot == "always" else "")
        )
    if available is not None:
        parts.append(f"the pools that exist ({', '.join(sorted(available)) or 'none'})")
    return "no instance type matches " + (", ".join(parts) if parts else "the job") + "; relax one of them"


def _reason(
    spec: JobSpec,
    chosen: Estimate,
    alternatives: tuple[Estimate, ...],
    over_budget: list[Estimate],
    missed: bool,
) -> str:
    policy = spec.policy
    head = f"{chosen.option}: {format_usd(chosen.cost_usd)}, {format_duration(chosen.seconds)}"
    # Which speed that time came from: comparable runs once one has finished, else the model.
    head += f" at {chosen.tokens_per_second:,.0f} tok/s ({chosen.throughput_text})"
    if chosen.trials > 1:
        head += f" for {chosen.trials} trials, {chosen.concurrent_trials} at a time"
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


__all__ = ["Decision", "NoFeasibleOption", "choose"]
