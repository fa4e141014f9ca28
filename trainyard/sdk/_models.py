"""Response models. Every one allows extra fields, so a newer server never breaks an older client;
fields a server may leave out default to None."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic

from pydantic import Field

from trainyard.sdk._catalog_models import InstanceType, Model
from trainyard.sdk._cost_models import CostBucket, CostMetrics, CostReport, CostRow, CostWindow
from trainyard.sdk._model_base import T, TimeOrText, TrainyardModel
from trainyard.sdk._plan_models import EstimateOption, Plan, PlanAlternative, PoolOption

__all__ = [
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "Checkpoint",
    "CostBucket",
    "CostMetrics",
    "CostReport",
    "CostRow",
    "CostWindow",
    "Estimate",
    "EstimateOption",
    "InstanceType",
    "Job",
    "JobCost",
    "JobError",
    "JobEvent",
    "JobProgress",
    "JobResult",
    "Model",
    "Page",
    "Plan",
    "PlanAlternative",
    "PoolOption",
    "QueueAlternative",
    "QueueAnswer",
    "QueueMove",
    "QueuePool",
    "QueueSummary",
    "SweepTrial",
    "TrainyardModel",
]

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# A paused job is not finished, but it will not move until someone resumes it.
SETTLED_STATUSES = TERMINAL_STATUSES | {"paused"}


class Page(TrainyardModel, Generic[T]):
    """One page of a list: `{"object": "list", "data": [...], "has_more": bool}`."""

    object: str = "list"
    data: list[T] = Field(default_factory=list)
    has_more: bool = False


class JobProgress(TrainyardModel):
    step: int = 0
    total_steps: int | None = None
    tokens: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    # What the run is doing when the server says: queued, starting_workers, loading_model,
    # training, checkpointing, saving.
    phase: str | None = None
    # A sweep: how many of its trials have started, of how many it runs.
    trial: int | None = None
    trials: int | None = None

    @property
    def fraction(self) -> float | None:
        """Share of steps done, 0..1, or None while the total is unknown."""
        if not self.total_steps:
            return None
        return min(1.0, self.step / self.total_steps)


class JobGoodput(TrainyardModel):
    """A job's dollars by what they bought; `goodput` is the productive share (None: no spend)."""

    productive_usd: float = 0.0
    startup_usd: float = 0.0
    checkpoint_usd: float = 0.0
    recomputed_usd: float = 0.0
    lost_usd: float = 0.0
    goodput: float | None = None


class JobCost(TrainyardModel):
    usd: float = 0.0
    billable_seconds: float = 0.0
    estimated_usd: float | None = None
    # Only in a single job's answer (GET /v1/jobs/{id}), not in lists.
    goodput: JobGoodput | None = None


class SweepTrial(TrainyardModel):
    trial: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    metric: float | None = None
    step: int | None = None
    final_model_uri: str | None = None
    latest_checkpoint_uri: str | None = None


class JobResult(TrainyardModel):
    """What a finished attempt recorded: the final model, the cost report, the checkpoints Ray
    Train kept and the last step's metrics. Filled in as the job ends."""

    final_model_uri: str | None = None
    cost_report_uri: str | None = None
    latest_checkpoint_uri: str | None = None
    checkpoint_uris: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    steps: int | None = None
    total_steps: int | None = None
    start_step: int | None = None
    tokens_trained: int | None = None
    tokens_this_attempt: int | None = None
    stopped_early: bool | None = None
    stop_reason: str | None = None
    best_trial: str | None = None
    trials: list[SweepTrial] = Field(default_factory=list)


class JobError(TrainyardModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None


class QueueMove(TrainyardModel):
    """The request that moves a queued job to an alternative (`client.jobs.move` sends it)."""

    method: str = "POST"
    path: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)


class QueueAlternative(TrainyardModel):
    """Another pool that would start a queued job sooner: when it would start and finish there,
    and what it would cost (`extra_cost_usd` against its plan now)."""

    instance_type: str
    spot: bool = False
    pool: str | None = None
    starts_in_seconds: float | None = None
    estimated_start_at: TimeOrText = None
    estimated_seconds: float | None = None
    estimated_finish_at: TimeOrText = None
    finishes_sooner_by_seconds: float | None = None
    estimated_cost_usd: float | None = None
    extra_cost_usd: float | None = None
    meets_deadline: bool | None = None
    # "on c7i.2xlarge: starts now, finishes 6 min sooner, +$0.0049"
    summary: str = ""
    move: QueueMove | None = None
    command: str | None = None


class QueueAnswer(TrainyardModel):
    """Where a queued (or paused) job stands: its place in its pool's line (1 is next), when it
    should start, why it waits, and up to three pools that would start it sooner.

    `reason` is one of pool_full, team_quota, backoff (see `not_before`), paused,
    pool_unavailable, awaiting_worker; `reasons` lists every one that holds it."""

    object: str = "job.queue"
    pool: str | None = None
    position: int | None = None
    reason: str
    reasons: list[str] = Field(default_factory=list)
    message: str = ""
    not_before: TimeOrText = None
    eta_seconds: float | None = None
    estimated_start_at: TimeOrText = None
    estimated_finish_at: TimeOrText = None
    alternatives: list[QueueAlternative] = Field(default_factory=list)
    as_of: TimeOrText = None


class QueuePool(TrainyardModel):
    pool: str | None = None
    waiting: int = 0
    running: int = 0
    gpus_in_use: float = 0.0
    oldest_waiting_seconds: float | None = None


class QueueSummary(TrainyardModel):
    """Jobs waiting and running now, by pool (GET /v1/queue)."""

    object: str = "queue_summary"
    waiting: int = 0
    running: int = 0
    gpus_in_use: float = 0.0
    pools: list[QueuePool] = Field(default_factory=list)
    as_of: TimeOrText = None


class Job(TrainyardModel):
    id: str
    object: str = "job"
    status: str
    team: str | None = None
    name: str | None = None
    base_model: str | None = None
    task: str | None = None
    method: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    instance_type: str | None = None
    pool: str | None = None
    plan: Plan | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    cost: JobCost = Field(default_factory=JobCost)
    attempts: int = 0
    max_attempts: int | None = None
    max_preemptions: int | None = None
    priority: int | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    error: JobError | None = None
    result: JobResult | None = None
    # The id of the model a succeeded job made (`ft:<base>:<team>:<suffix>:<job>`); it works as
    # the `base_model` of a further job.
    fine_tuned_model: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Only in a single job's answer and the queue's list, and only while it waits.
    queue: QueueAnswer | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_settled(self) -> bool:
        """Finished, or paused: either way, waiting longer changes nothing."""
        return self.status in SETTLED_STATUSES


class JobEvent(TrainyardModel):
    id: str
    object: str = "job.event"
    job_id: str | None = None
    attempt_id: str | None = None
    type: str = "message"
    level: str = "info"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class Checkpoint(TrainyardModel):
    id: str
    object: str = "job.checkpoint"
    job_id: str | None = None
    attempt_id: str | None = None
    trial: str | None = None  # a sweep's trial
    step: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    uri: str | None = None
    created_at: datetime | None = None


class JobLog(TrainyardModel):
    """A piece of one attempt's log; ask again with ``after=next_offset`` to read on."""

    object: str = "job.log"
    job_id: str | None = None
    job_status: str | None = None
    attempt: int = 0
    attempts: int = 0
    offset: int = 0
    next_offset: int = 0
    data: str = ""
    complete: bool = False


class Estimate(TrainyardModel):
    """Every option for a job spec, and the plan the policy would pick (None, with `error`,
    when nothing is feasible)."""

    object: str = "estimate"
    model_parameters: int | None = None
    dataset_tokens: int | None = None
    chosen: Plan | None = None
    error: JobError | None = None
    options: list[EstimateOption] = Field(default_factory=list)

    @property
    def objective(self) -> str | None:
        return self.chosen.objective if self.chosen else None

    @property
    def reason(self) -> str | None:
        return self.chosen.reason if self.chosen else None

    def is_chosen(self, option: EstimateOption) -> bool:
        return (
            self.chosen is not None
            and option.instance_type == self.chosen.instance_type
            and option.spot == self.chosen.spot
        )
