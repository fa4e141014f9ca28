"""What a job produced, beyond `Job.result` (in _models): its cost report and the final model's
file listing. Like every response model, each keeps fields a newer server adds."""

from __future__ import annotations

from pydantic import Field

from trainyard.sdk._models import JobGoodput, TimeOrText, TrainyardModel

__all__ = [
    "CostReportAttempt",
    "CostReportEstimate",
    "CostReportTotals",
    "JobCostReport",
    "ModelFile",
    "ModelFiles",
]


class CostReportAttempt(TrainyardModel):
    attempt: int
    attempt_id: str | None = None
    worker: str | None = None
    started_at: TimeOrText = None
    ended_at: TimeOrText = None
    billable_seconds: float = 0.0
    instance_type: str | None = None
    spot: bool = False
    usd_per_hour: float | None = None
    on_demand_usd_per_hour: float | None = None
    accelerator_count: int | None = None
    cost_usd: float = 0.0
    outcome: str | None = None
    start_step: int | None = None
    end_step: int | None = None
    tokens_trained: int | None = None
    steps_recomputed: int = 0
    tokens_recomputed: int = 0
    wasted_usd: float = 0.0


class CostReportTotals(TrainyardModel):
    billable_seconds: float = 0.0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
    wasted_usd: float = 0.0
    recomputed_usd: float = 0.0
    steps_recomputed: int = 0
    tokens_trained: int = 0
    usd_per_million_tokens: float | None = None
    on_demand_equivalent_usd: float | None = None
    spot_savings_usd: float | None = None


class CostReportEstimate(TrainyardModel):
    estimated_cost_usd: float | None = None
    estimated_seconds: float | None = None
    # (actual - estimated) / estimated: -0.4 is 40% under the estimate.
    cost_error: float | None = None


class JobCostReport(TrainyardModel):
    """A job's cost report: per attempt, what it was billed on and what it cost; totals, goodput,
    and the estimate against the actual. `uri` is where it was published (None while the job is
    unfinished: then it is the figures so far)."""

    object: str = "cost_report"
    job_id: str
    team: str | None = None
    status: str | None = None
    instance_type: str | None = None
    accelerator: str | None = None
    accelerator_count: int | None = None
    spot: bool = False
    usd_per_hour: float | None = None
    attempts: list[CostReportAttempt] = Field(default_factory=list)
    totals: CostReportTotals = Field(default_factory=CostReportTotals)
    goodput: JobGoodput = Field(default_factory=JobGoodput)
    estimate: CostReportEstimate = Field(default_factory=CostReportEstimate)
    uri: str | None = None


class ModelFile(TrainyardModel):
    path: str
    bytes: int = 0


class ModelFiles(TrainyardModel):
    """The files of a job's final model, paths relative to the model directory."""

    object: str = "list"
    job_id: str | None = None
    uri: str | None = None
    data: list[ModelFile] = Field(default_factory=list)
    has_more: bool = False
    total_bytes: int = 0
