"""What one training attempt produced: the one type that flows from the training loop through
the launcher to the attempt process, which stores it as the job's ``result``.

Rank 0 of the loop fills the training fields; the launcher adds the checkpoints Ray Train kept;
a sweep adds its trials. Across Ray and into the database it travels as :meth:`to_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trainyard.money import format_usd
from trainyard.platform.states import AttemptOutcome


@dataclass(frozen=True)
class TrainingOutcome:
    final_model_uri: str | None
    metrics: dict[str, Any]  # the last step's metrics (step, epoch, tokens_seen, loss, eval_loss, ...)
    steps: int  # optimizer steps done, counting those of earlier attempts
    start_step: int  # the step this attempt resumed from (0 for a fresh start)
    total_steps: int
    tokens_trained: int  # non-padding tokens over all workers, earlier attempts included
    tokens_this_attempt: int  # the part of tokens_trained this attempt did (throughput, metering)
    stopped_early: bool  # stopped on RunControl.request_stop; no final model then
    stop_reason: str | None = None
    latest_checkpoint_uri: str | None = None
    checkpoint_uris: list[str] = field(default_factory=list)  # what Ray Train still keeps, oldest first
    best_trial: str | None = None  # sweeps: the trial whose model became the final model
    # This attempt's tokens over its training time (train begin to end, saves included): what
    # the next estimate of a comparable job learns from. None for a sweep (its trials overlap).
    tokens_per_second: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: what a Ray worker returns and the attempt's ``result`` column holds."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingOutcome:
        return cls(**data)


def stopped_outcome(
    reason: str | None, budget: float | None = None
) -> tuple[AttemptOutcome, str | None, str | None, bool]:
    """How an attempt that stopped early for `reason` ends: (outcome, error code, message,
    retryable). The same whether the run stopped by itself or was killed past its grace period."""
    if reason == "cancelled":
        return AttemptOutcome.CANCELLED, None, None, True
    if reason == "budget_exceeded":
        cap = "its cap" if budget is None else format_usd(budget)
        return AttemptOutcome.FAILED, "budget_exceeded", f"projected spend passed max_cost_usd ({cap})", False
    if reason in ("shutdown", "paused", "replanned"):
        return AttemptOutcome.HANDED_BACK, None, None, True
    if reason == "preempted":
        message = "a node of the run was preempted; the run saved its current step first"
        return AttemptOutcome.PREEMPTED, "preempted", message, True
    return AttemptOutcome.CRASHED, "stopped", f"run stopped early ({reason})", True
