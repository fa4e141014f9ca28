"""`Trainyard` and `AsyncTrainyard`: the entry points."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from trainyard.sdk._base import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncAPIClient, SyncAPIClient
from trainyard.sdk.resources import (
    AsyncBudgets,
    AsyncCosts,
    AsyncEstimates,
    AsyncFiles,
    AsyncInstanceTypes,
    AsyncJobs,
    AsyncModels,
    AsyncQueue,
    Budgets,
    Costs,
    Estimates,
    Files,
    InstanceTypes,
    Jobs,
    Models,
    Queue,
)

__all__ = ["AsyncTrainyard", "Trainyard"]


class Trainyard(SyncAPIClient):
    """A synchronous client.

    `base_url` and `api_key` come from the arguments, else $TRAINYARD_BASE_URL and
    $TRAINYARD_API_KEY, else the saved credentials file; the URL defaults to
    http://127.0.0.1:8000. `http_client` lets you bring your own httpx.Client (proxies, custom
    transports); the client then leaves closing it to you.
    """

    jobs: Jobs
    estimates: Estimates
    costs: Costs
    instance_types: InstanceTypes
    queue: Queue
    files: Files
    budgets: Budgets
    models: Models

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http_client)
        self.jobs = Jobs(self)
        self.estimates = Estimates(self)
        self.costs = Costs(self)
        self.instance_types = InstanceTypes(self)
        self.queue = Queue(self)
        self.files = Files(self)
        self.budgets = Budgets(self)
        self.models = Models(self)

    def health(self) -> dict[str, Any]:
        """The server's /healthz answer (it checks the database)."""
        data, _ = self.request("GET", "/healthz")
        return dict(data or {})

    def __enter__(self) -> Trainyard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Trainyard(base_url={self.base_url!r})"


class AsyncTrainyard(AsyncAPIClient):
    """The asyncio client; the same resources, with `await` (and `async for` over lists)."""

    jobs: AsyncJobs
    estimates: AsyncEstimates
    costs: AsyncCosts
    instance_types: AsyncInstanceTypes
    queue: AsyncQueue
    files: AsyncFiles
    budgets: AsyncBudgets
    models: AsyncModels

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http_client)
        self.jobs = AsyncJobs(self)
        self.estimates = AsyncEstimates(self)
        self.costs = AsyncCosts(self)
        self.instance_types = AsyncInstanceTypes(self)
        self.queue = AsyncQueue(self)
        self.files = AsyncFiles(self)
        self.budgets = AsyncBudgets(self)
        self.models = AsyncModels(self)

    async def health(self) -> dict[str, Any]:
        data, _ = await self.request("GET", "/healthz")
        return dict(data or {})

    async def __aenter__(self) -> AsyncTrainyard:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncTrainyard(base_url={self.base_url!r})"
