"""`client.costs`: spend over a window, grouped by team, instance type, user, model, ..."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trainyard.sdk._models import CostReport

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncCosts", "Costs"]


def _params(
    window: str,
    aggregate: str | Sequence[str],
    step: str | None,
    team: str | None,
    filters: Mapping[str, str] | None,
    limit: int | None,
) -> dict[str, Any]:
    dims = aggregate if isinstance(aggregate, str) else ",".join(aggregate)
    params: dict[str, Any] = {"window": window, "aggregate": dims, "step": step, "team": team, "limit": limit}
    # `filter[dimension]=value`, the bracket form the job list uses for metadata.
    for dim, value in (filters or {}).items():
        params[f"filter[{dim}]"] = value
    return params


class Costs:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def query(
        self,
        window: str = "7d",
        aggregate: str | Sequence[str] = "team",
        step: str | None = None,
        *,
        team: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> CostReport:
        """Spend over `window` ("24h", "7d", "30d", "month" or "start,end") grouped by
        `aggregate` (one dimension or several: "team", "instance_type", "user", "model",
        "label:<key>", ...); `step` (e.g. "1d") adds a series of time buckets."""
        params = _params(window, aggregate, step, team, filters, limit)
        return self._client.get_model(CostReport, "/v1/costs", params=params)


class AsyncCosts:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def query(
        self,
        window: str = "7d",
        aggregate: str | Sequence[str] = "team",
        step: str | None = None,
        *,
        team: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> CostReport:
        params = _params(window, aggregate, step, team, filters, limit)
        return await self._client.get_model(CostReport, "/v1/costs", params=params)
