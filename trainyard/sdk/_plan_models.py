"""Plan responses: the scheduler's choice for a job, its alternatives, and the options an
estimate lists. `_models` re-exports them."""

from __future__ import annotations

from pydantic import Field

from trainyard.sdk._model_base import TrainyardModel


class PlanAlternative(TrainyardModel):
    option: str | None = None
    estimated_seconds: float | None = None
    estimated_cost_usd: float | None = None


class PoolOption(TrainyardModel):
    """The best way to run a job on one pool of the deployment, by the job's policy."""

    instance_type: str
    spot: bool = False
    accelerator_count: int | None = None
    estimated_seconds: float | None = None
    estimated_cost_usd: float | None = None
    meets_deadline: bool | None = None


class Plan(TrainyardModel):
    """The scheduler's choice for a job: where it runs, and what it should take and cost."""

    instance_type: str | None = None
    spot: bool = False
    kind: str | None = None
    accelerator: str | None = None
    accelerator_count: int | None = None
    workers: int | None = None
    usd_per_hour: float | None = None
    on_demand_usd_per_hour: float | None = None
    estimated_seconds: float | None = None
    estimated_cost_usd: float | None = None
    usd_per_million_tokens: float | None = None
    # A sweep: its trials, and how many run at once (an instance each, all billed).
    trials: int | None = None
    concurrent_trials: int | None = None
    strategy: str | None = None
    gradient_checkpointing: bool | None = None
    # Per worker; their product is the job's batch_size x gradient_accumulation_steps.
    micro_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    # The tokens per second the estimate used and where it came from: "learned" from
    # `throughput_runs` finished runs of a comparable shape, or "model" (FLOPs over device speed).
    tokens_per_second: float | None = None
    throughput_source: str | None = None
    throughput_runs: int | None = None
    objective: str | None = None
    meets_deadline: bool | None = None
    within_budget: bool | None = None
    reason: str | None = None
    alternatives: list[PlanAlternative] = Field(default_factory=list)
    pool_options: list[PoolOption] = Field(default_factory=list)

    @property
    def label(self) -> str:
        name = self.instance_type or "-"
        return f"{name} spot" if self.spot else name


class EstimateOption(TrainyardModel):
    """One way to run a job: an instance type, on-demand or spot, with its time and price."""

    instance_type: str
    spot: bool = False
    kind: str | None = None
    accelerator: str | None = None
    # Accelerators across all nodes.
    count: int | None = None
    fits: bool | None = None
    available: bool | None = None
    runnable: bool | None = None
    strategy: str | None = None
    micro_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    gradient_checkpointing: bool | None = None
    estimated_seconds: float | None = None
    estimated_cost_usd: float | None = None
    usd_per_hour: float | None = None
    usd_per_million_tokens: float | None = None
    tokens_per_second: float | None = None
    throughput_source: str | None = None
    throughput_runs: int | None = None
    trials: int | None = None
    concurrent_trials: int | None = None
    meets_deadline: bool | None = None
    within_budget: bool | None = None
    memory_gb: float | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        return f"{self.instance_type} spot" if self.spot else self.instance_type
