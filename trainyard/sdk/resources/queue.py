"""`client.queue`: what waits and runs by pool, and the caller's waiting jobs with their answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainyard.sdk._models import Job, Page, QueueSummary
from trainyard.sdk._pagination import AsyncPaginator, SyncPaginator

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncQueue", "Queue"]


def _params(
    team: str | None, pool: str | None, order: str | None, limit: int | None, after: str | None
) -> dict[str, str | int | None]:
    return {"team": team, "pool": pool, "order": order, "limit": limit, "after": after}


class Queue:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def summary(self, *, team: str | None = None) -> QueueSummary:
        """Jobs waiting and running now, by pool (admins: every team's, or `team`'s)."""
        return self._client.get_model(QueueSummary, "/v1/queue", params={"team": team})

    def jobs_page(
        self,
        *,
        team: str | None = None,
        pool: str | None = None,
        order: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        params = _params(team, pool, order, limit, after)
        return self._client.get_model(Page[Job], "/v1/queue/jobs", params=params)

    def jobs(
        self,
        *,
        team: str | None = None,
        pool: str | None = None,
        order: str | None = None,
        limit: int | None = None,
    ) -> SyncPaginator[Job]:
        """Queued and paused jobs by pool, in the order the claim takes them (`order="desc"`:
        the last in line first); each `Job.queue` says where it stands and why."""
        return SyncPaginator(
            lambda cursor: self.jobs_page(team=team, pool=pool, order=order, limit=limit, after=cursor)
        )


class AsyncQueue:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def summary(self, *, team: str | None = None) -> QueueSummary:
        return await self._client.get_model(QueueSummary, "/v1/queue", params={"team": team})

    async def jobs_page(
        self,
        *,
        team: str | None = None,
        pool: str | None = None,
        order: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        params = _params(team, pool, order, limit, after)
        return await self._client.get_model(Page[Job], "/v1/queue/jobs", params=params)

    def jobs(
        self,
        *,
        team: str | None = None,
        pool: str | None = None,
        order: str | None = None,
        limit: int | None = None,
    ) -> AsyncPaginator[Job]:
        return AsyncPaginator(
            lambda cursor: self.jobs_page(team=team, pool=pool, order=order, limit=limit, after=cursor)
        )
