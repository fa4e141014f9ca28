"""The policy rules, written once: which options a job may take, and in which order it wants them.

Eligibility comes first and is the same for every objective: instance kinds with a tested
execution path (``execution``; TPUs are estimated but never chosen), the pinned instance type, the pools
that exist (``available``), the spot choice (never: on-demand rows only; always: spot rows only;
auto: both) and the allowed accelerators narrow the options; then only options whose memory plan
fits remain; then, when the policy sets ``max_cost_usd``, only those within it. Each step that
leaves nothing has its own error code, so the user learns which constraint bit.

Order: ``cheapest`` by cost; ``fastest`` and ``budget`` by time; ``deadline`` by cost among the
options that finish in time, then the late ones by time (all by time when none is in time). Ties go
to the other criterion, then to option order (catalog order, on-demand before spot), so a decision
is reproducible.

The rules run over a jobs x options table: one row for ``policies.choose``, a whole queue for
``batch.choose_many``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from trainyard.platform.scheduling.execution import runnable
from trainyard.platform.spec import JobSpec

OBJECTIVES: tuple[str, ...] = ("cheapest", "fastest", "deadline", "budget")
_FASTEST, _DEADLINE, _BUDGET = (OBJECTIVES.index(o) for o in ("fastest", "deadline", "budget"))


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


def option_allowed(
    spec: JobSpec,
    available: set[str] | frozenset[str] | None,
    *,
    instance_type: str,
    spot: bool,
    kind: str,
    accelerator: str | None,
    family: str | None,
) -> bool:
    """Whether the job may take this option at all (before memory and budget are looked at)."""
    policy = spec.policy
    if not runnable(kind):
        return False
    if spec.instance_type is not None and instance_type != spec.instance_type:
        return False
    if available is not None and instance_type not in available:
        return False
    if (policy.spot == "never" and spot) or (policy.spot == "always" and not spot):
        return False
    return accelerator_allowed(policy.allowed_accelerators, kind, accelerator, family)


@dataclass(frozen=True, slots=True)
class Ranking:
    """Each job's options in the order it wants them; arrays are jobs x options unless noted."""

    fitting: NDArray[np.bool_]  # eligible and its memory plan fits
    pool: NDArray[np.bool_]  # fitting and within the budget: what the job may take
    late: NDArray[np.bool_]  # in the pool, but ranked after every option that meets the deadline
    primary: NDArray[np.float64]
    secondary: NDArray[np.float64]
    missed: NDArray[np.bool_]  # per job: a deadline job that no option in the pool finishes in time
    codes: list[str | None]  # per job: why it has no option, or None

    def best(self) -> NDArray[np.intp]:
        """Each job's first option (any index where the job has a code)."""
        first = self.pool & ~self.late
        primary = np.where(first, self.primary, np.inf)
        lowest = primary.min(axis=1, initial=np.inf)
        tied = first & (primary == lowest[:, None])
        return np.asarray(np.where(tied, self.secondary, np.inf).argmin(axis=1))

    def order(self, job: int) -> list[int]:
        """One job's pool, best first (the same first as ``best``)."""
        pool = np.flatnonzero(self.pool[job])
        # lexsort is stable: equal keys keep option order. The last key sorts first.
        keys = (self.secondary[job, pool], self.primary[job, pool], self.late[job, pool])
        ordered: list[int] = pool[np.lexsort(keys)].tolist()
        return ordered


def rank(
    eligible: NDArray[np.bool_],
    fits: NDArray[np.bool_],
    seconds: NDArray[np.float64],
    cost: NDArray[np.float64],
    *,
    budget: NDArray[np.float64],
    deadline: NDArray[np.float64],
    objective: NDArray[np.int_],
) -> Ranking:
    """Rank options for jobs. ``budget`` and ``deadline`` (seconds from now) are per job, inf when
    not set; ``objective`` is per job, an index into ``OBJECTIVES``."""
    fitting = eligible & fits
    pool = fitting & (cost <= budget[:, None])
    in_time = pool & (seconds <= deadline[:, None])
    is_deadline = objective == _DEADLINE
    missed = is_deadline & ~in_time.any(axis=1)
    late = (is_deadline & ~missed)[:, None] & pool & ~in_time
    by_time = ((objective == _FASTEST) | (objective == _BUDGET) | missed)[:, None] | late
    with np.errstate(invalid="ignore"):
        primary = np.where(by_time, seconds, cost)
        secondary = np.where(by_time, cost, seconds)
    codes: list[str | None] = []
    any_eligible: list[bool] = np.asarray(eligible.any(axis=1)).tolist()
    any_fit: list[bool] = np.asarray(fitting.any(axis=1)).tolist()
    any_pool: list[bool] = np.asarray(pool.any(axis=1)).tolist()
    for has_eligible, has_fit, has_pool in zip(any_eligible, any_fit, any_pool, strict=True):
        if not has_eligible:
            codes.append("no_eligible_instance")
        elif not has_fit:
            codes.append("no_instance_fits")
        elif not has_pool:
            codes.append("budget_infeasible")
        else:
            codes.append(None)
    return Ranking(fitting, pool, late, primary, secondary, missed, codes)
