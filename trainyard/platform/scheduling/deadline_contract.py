"""The deadline contract: whether a job's next stretch of work stays on spot or moves.

At every interruption and every recorded checkpoint the platform asks: with the work that is left
(measured at the pace the job is actually training at), the time left to the deadline and the
spot option's interruption risk, does spot still finish in time with the configured confidence?
When it does not, the work moves to the cheapest option that does (on-demand capacity, perhaps a
faster type), and the reason says what spot would have done and what the move costs. A budget
objective asks the mirror question: does the current option still finish within what is left of
the budget, and if not, which is the fastest that does. This is the "uniform progress" idea of
Can't Be Late (NSDI '24): spot until the slack runs out, then on-demand.

Interruptions on spot are a Poisson process at the option's rate. Each costs its restart
(reprovisioning and the model reload) plus the work since the last checkpoint, half an interval
on average. If at most ``k`` interruptions arrive during the first ``finish(k)`` seconds
(``finish(k)`` = start-up + work + k x cost), the run is done by ``finish(k)``; so
``P(N(finish(k)) <= k)`` is a lower bound on finishing by ``finish(k)``, and the smallest ``k``
where it reaches the confidence gives the finish time the contract plans with.

Pure: no database, no clock; ``trainyard.platform.replanning`` feeds it from the job's rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.durations import format_duration
from trainyard.money import format_usd

OBJECTIVES = ("deadline", "budget")
# Past this many interruptions a run is treated as never finishing (the rate outruns the restarts).
MAX_INTERRUPTIONS = 1000


@dataclass(frozen=True, slots=True)
class Option:
    """Where the rest of the job could run, and what it knows about running there."""

    instance_type: str
    spot: bool
    usd_per_hour: float
    # Training seconds the remaining work takes on this option, at its pace.
    seconds: float
    # Seconds before it trains: 0 for the attempt already running, else provisioning + model load.
    startup_seconds: float
    interruptions_per_hour: float = 0.0
    # Per interruption: reprovisioning and reloading (the lost work is added from the interval).
    restart_seconds: float = 0.0
    checkpoint_interval_seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{'spot' if self.spot else 'on-demand'} {self.instance_type}"

    @property
    def interruption_seconds(self) -> float:
        """What one interruption costs: the restart and, on average, half a checkpoint interval."""
        return self.restart_seconds + 0.5 * min(self.checkpoint_interval_seconds, self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "spot": self.spot,
            "usd_per_hour": self.usd_per_hour,
            "seconds": round(self.seconds, 1),
            "startup_seconds": round(self.startup_seconds, 1),
            "interruptions_per_hour": self.interruptions_per_hour,
        }


@dataclass(frozen=True, slots=True)
class Outlook:
    """One option's remaining run: when it finishes and what it costs, expected and at the
    confidence the contract plans with."""

    option: Option
    # Probability of finishing by the deadline (None without one).
    p_on_time: float | None
    expected_seconds: float
    seconds_at_confidence: float
    expected_cost_usd: float
    cost_at_confidence: float

    def to_dict(self) -> dict[str, Any]:
        def num(x: float | None, digits: int) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, digits)

        return {
            **self.option.to_dict(),
            "p_on_time": num(self.p_on_time, 4),
            "expected_seconds": num(self.expected_seconds, 1),
            "seconds_at_confidence": num(self.seconds_at_confidence, 1),
            "expected_cost_usd": num(self.expected_cost_usd, 6),
            "cost_at_confidence": num(self.cost_at_confidence, 6),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    objective: str
    confidence: float
    stay: bool
    current: Outlook
    chosen: Outlook
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "confidence": self.confidence,
            "stay": self.stay,
            "current": self.current.to_dict(),
            "chosen": self.chosen.to_dict(),
            "reason": self.reason,
        }


def poisson_cdf(k: int, mean: float) -> float:
    """P(N <= k) for N ~ Poisson(mean)."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    log_mean = math.log(mean)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(i * log_mean - mean - math.lgamma(i + 1))
    return min(1.0, total)


def finish_seconds(option: Option, interruptions: int) -> float:
    return option.startup_seconds + option.seconds + interruptions * option.interruption_seconds


def p_finish_by(option: Option, seconds: float) -> float:
    """Probability (a lower bound, see the module) that ``option`` finishes within ``seconds``."""
    base = option.startup_seconds + option.seconds
    if base > seconds:
        return 0.0
    rate = option.interruptions_per_hour / 3600.0
    if rate <= 0:
        return 1.0
    per = option.interruption_seconds
    k = MAX_INTERRUPTIONS if per <= 0 else min(MAX_INTERRUPTIONS, math.floor((seconds - base) / per))
    return poisson_cdf(k, rate * finish_seconds(option, k))


def outlook(option: Option, *, seconds_left: float | None, confidence: float) -> Outlook:
    """The remaining run on ``option``; ``seconds_left`` to the deadline, if there is one."""
    rate = option.interruptions_per_hour / 3600.0
    per = option.interruption_seconds
    base = option.startup_seconds + option.seconds
    if rate <= 0:
        expected = at_confidence = base
    else:
        load = rate * per
        expected = base / (1.0 - load) if load < 1.0 else math.inf
        at_confidence = math.inf
        for k in range(MAX_INTERRUPTIONS + 1):
            if poisson_cdf(k, rate * finish_seconds(option, k)) >= confidence:
                at_confidence = finish_seconds(option, k)
                break
    p = None if seconds_left is None else p_finish_by(option, seconds_left)
    price = option.usd_per_hour / 3600.0
    return Outlook(option, p, expected, at_confidence, expected * price, at_confidence * price)


def decide(
    current: Option,
    alternatives: Sequence[Option],
    *,
    objective: str,
    confidence: float,
    seconds_left: float | None = None,
    budget_left_usd: float | None = None,
) -> Verdict:
    """Stay on ``current`` or move to one of ``alternatives``.

    deadline: stay while the current option finishes in time with ``confidence``; else take the
    cheapest (expected) option that does, else the one that finishes soonest. budget: stay while
    the current option's cost at ``confidence`` fits what is left; else the fastest that fits,
    else the cheapest.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if objective == "deadline" and seconds_left is None:
        raise ValueError("the deadline objective needs seconds_left")
    if objective == "budget" and budget_left_usd is None:
        raise ValueError("the budget objective needs budget_left_usd")
    here = outlook(current, seconds_left=seconds_left, confidence=confidence)
    others = [outlook(o, seconds_left=seconds_left, confidence=confidence) for o in alternatives]
    if objective == "deadline":
        assert seconds_left is not None
        if _in_time(here, confidence):
            return Verdict(objective, confidence, True, here, here, _stay_deadline(here, seconds_left))
        in_time = [o for o in others if _in_time(o, confidence)]
        if in_time:
            chosen = min(in_time, key=lambda o: (o.expected_cost_usd, o.expected_seconds))
        else:
            chosen = min([here, *others], key=lambda o: (o.seconds_at_confidence, o.expected_cost_usd))
        stay = chosen is here
        return Verdict(
            objective, confidence, stay, here, chosen, _move_deadline(here, chosen, seconds_left, confidence)
        )
    assert budget_left_usd is not None
    if here.cost_at_confidence <= budget_left_usd:
        return Verdict(objective, confidence, True, here, here, _stay_budget(here, budget_left_usd))
    within = [o for o in others if o.cost_at_confidence <= budget_left_usd]
    if within:
        chosen = min(within, key=lambda o: (o.expected_seconds, o.expected_cost_usd))
    else:
        chosen = min([here, *others], key=lambda o: (o.cost_at_confidence, o.expected_seconds))
    stay = chosen is here
    return Verdict(objective, confidence, stay, here, chosen, _move_budget(here, chosen, budget_left_usd))


def _in_time(o: Outlook, confidence: float) -> bool:
    return o.p_on_time is not None and o.p_on_time >= confidence


def _duration(seconds: float) -> str:
    # The one duration rule (trainyard/durations.py); the words around it say which way.
    return format_duration(abs(seconds)) if math.isfinite(seconds) else "never"


def _signed_usd(usd: float) -> str:
    if not math.isfinite(usd):
        return "+$?"
    return ("+" if usd >= 0 else "-") + format_usd(abs(usd))


def _what(o: Outlook) -> str:
    return "spot" if o.option.spot else f"on-demand {o.option.instance_type}"


def _stay_deadline(here: Outlook, seconds_left: float) -> str:
    return (
        f"{_what(here)} finishes {_duration(seconds_left - here.seconds_at_confidence)} before the deadline "
        f"with p={here.p_on_time:.2f}; staying on {here.option.label}"
    )


def _move_deadline(here: Outlook, chosen: Outlook, seconds_left: float, confidence: float) -> str:
    late = here.seconds_at_confidence - seconds_left
    p_late = 1.0 - (here.p_on_time or 0.0)
    head = (
        f"{_what(here)} would finish {_duration(late)} after the deadline with p={p_late:.2f}"
        if math.isfinite(late)
        else f"{_what(here)} would not finish"
    )
    if chosen is here:
        return f"{head}; nothing finishes sooner, staying on {here.option.label}"
    extra = chosen.expected_cost_usd - here.expected_cost_usd
    tail = "" if _in_time(chosen, confidence) else ", still late: the soonest finish there is"
    return f"{head}; moving to {chosen.option.label}: {_signed_usd(extra)}{tail}"


def _stay_budget(here: Outlook, budget_left: float) -> str:
    return (
        f"{here.option.label} costs {format_usd(here.cost_at_confidence)} of the "
        f"{format_usd(budget_left)} left; staying"
    )


def _move_budget(here: Outlook, chosen: Outlook, budget_left: float) -> str:
    head = (
        f"{here.option.label} would cost {format_usd(here.cost_at_confidence)} against the "
        f"{format_usd(budget_left)} left of the budget"
    )
    if chosen is here:
        return f"{head}; nothing is cheaper, staying"
    longer = chosen.expected_seconds - here.expected_seconds
    return (
        f"{head}; moving to {chosen.option.label}: "
        f"{_signed_usd(chosen.expected_cost_usd - here.expected_cost_usd)}, "
        f"{_duration(longer)} {'longer' if longer >= 0 else 'sooner'}"
    )


__all__ = ["Option", "Outlook", "Verdict", "decide", "outlook", "p_finish_by", "poisson_cdf"]
