"""`client.budgets`: each visible team's monthly budget against its spend; admins set them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainyard.sdk._budgets import TeamBudget
from trainyard.sdk._models import Page
from trainyard.sdk.resources._common import path_id

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncBudgets", "Budgets"]


class Budgets:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def list(self) -> list[TeamBudget]:
        """This month's spend against the budget of each team the key sees (admins: all)."""
        return self._client.get_model(Page[TeamBudget], "/v1/budgets").data

    def set(self, team: str, monthly_budget_usd: float | None) -> TeamBudget:
        """Set a team's monthly budget in dollars (None clears it); admin keys only."""
        return self._client.request_model(
            TeamBudget,
            "PUT",
            f"/v1/teams/{path_id(team)}/budget",
            body={"monthly_budget_usd": monthly_budget_usd},
        )


class AsyncBudgets:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def list(self) -> list[TeamBudget]:
        return (await self._client.get_model(Page[TeamBudget], "/v1/budgets")).data

    async def set(self, team: str, monthly_budget_usd: float | None) -> TeamBudget:
        return await self._client.request_model(
            TeamBudget,
            "PUT",
            f"/v1/teams/{path_id(team)}/budget",
            body={"monthly_budget_usd": monthly_budget_usd},
        )
