"""Cost responses: `/v1/costs` rows, windows, buckets and reports."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from trainyard.sdk._model_base import TimeOrText, TrainyardModel


class CostMetrics(TrainyardModel):
    cost_usd: float = 0.0
    billable_hours: float | None = None
    gpu_hours: float | None = None
    jobs: int = 0
    tokens_trained: float | None = None
    usd_per_million_tokens: float | None = None
    spot_savings_usd: float | None = None
    waste_usd: float | None = None
    # Goodput: the dollars split by what they bought, and the productive share.
    productive_usd: float | None = None
    startup_usd: float | None = None
    recomputed_usd: float | None = None
    lost_usd: float | None = None
    goodput: float | None = None
    estimated_usd: float | None = None
    estimate_actual_usd: float | None = None
    estimate_error: float | None = None


class CostRow(CostMetrics):
    """Spend of one group; `key` maps each aggregated dimension to this group's value."""

    key: dict[str, Any] = Field(default_factory=dict)
    previous_cost_usd: float | None = None


class CostWindow(TrainyardModel):
    start: TimeOrText = None
    end: TimeOrText = None
    step: int | None = None  # seconds per bucket, when the report has buckets


class CostBucket(TrainyardModel):
    start: TimeOrText = None
    end: TimeOrText = None
    totals: CostMetrics = Field(default_factory=CostMetrics)
    data: list[CostRow] = Field(default_factory=list)


class CostReport(TrainyardModel):
    """Spend over a window grouped by `aggregate`, with totals, the previous window for
    comparison and, with a step, a series of buckets."""

    object: str = "cost_allocation"
    currency: str = "usd"
    window: CostWindow = Field(default_factory=CostWindow)
    aggregate: list[str] = Field(default_factory=list)
    data: list[CostRow] = Field(default_factory=list)
    totals: CostMetrics = Field(default_factory=CostMetrics)
    previous: dict[str, Any] | None = None
    change: dict[str, Any] | None = None
    truncated: bool = False
    series: list[CostBucket] | None = None
