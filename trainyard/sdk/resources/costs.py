"""`client.costs`: spend over a window, grouped by team, instance type, user, model, ..."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trainyard.sdk._models import CostReport

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncCosts", "Costs"]


Dimensions = str | Sequence[str]


def _dims(value: Dimensions) -> str:
    return value if isinstance(value, str) else ",".join(value)


def _params(
    window: str,
    aggregate: Dimensions | None,
    by: Dimensions | None,
    step: str | None,
    team: str | None,
    filters: Mapping[str, str] | None,
    limit: int | None,
) -> dict[str, Any]:
    # `by` is what the CLI calls it (`--by`), `aggregate` what the API does; either works.
    if by is not None and aggregate is not None and _dims(by) != _dims(aggregate):
        raise ValueError("pass the dimensions as by= or aggregate=, not both")
    chosen = by if by is not None else aggregate
    dims = _dims(chosen) if chosen is not None else "team"
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
        aggregate: Dimensions | None = None,
        step: str | None = None,
        *,
        by: Dimensions | None = None,
        team: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> CostReport:
        """Spend over `window` ("24h", "7d", "30d", "month" or "start,end") grouped by `by`
        (or its other name, `aggregate`): one dimension or several, "team" (the default),
        "instance_type", "user", "model", "label:<key>", ...; `step` (e.g. "1d") adds a series
        of time buckets."""
        params = _params(window, aggregate, by, step, team, filters, limit)
        return self._client.get_model(CostReport, "/v1/costs", params=params)


class AsyncCosts:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def query(
        self,
        window: str = "7d",
        aggregate: Dimensions | None = None,
        step: str | None = None,
        *,
        by: Dimensions | None = None,
        team: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> CostReport:
        params = _params(window, aggregate, by, step, team, filters, limit)
        return await self._client.get_model(CostReport, "/v1/costs", params=params)
