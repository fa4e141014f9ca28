"""A team's monthly budget as `GET /v1/budgets` and `PUT /v1/teams/{name}/budget` answer it."""

from __future__ import annotations

from trainyard.sdk._models import TimeOrText, TrainyardModel

__all__ = ["TeamBudget"]


class TeamBudget(TrainyardModel):
    """A team's monthly budget (None: unset) against what it spent this UTC month, what queued
    and running jobs still expect to spend, and what is left after both."""

    object: str = "team_budget"
    team: str
    team_id: str | None = None
    monthly_budget_usd: float | None = None
    spent_this_month: float = 0.0
    committed_usd: float = 0.0
    remaining: float | None = None
    available: float | None = None
    used_fraction: float | None = None
    projected_month_usd: float | None = None
    month_start: TimeOrText = None
    month_end: TimeOrText = None
