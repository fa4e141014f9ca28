"""`client.jobs`: create, get, list, cancel, events, checkpoints, wait."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trainyard.sdk._errors import WaitTimeoutError
from trainyard.sdk._models import Checkpoint, Job, JobEvent, Page
from trainyard.sdk._pagination import AsyncPaginator, SyncPaginator
from trainyard.sdk.resources._common import job_body, path_id

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncJobs", "Jobs"]


def _idempotency_headers(key: str | None) -> dict[str, str]:
    # A fresh key per call, kept for that call's retries: a create retried after a lost response
    # returns the job the first try made instead of queueing a second one.
    return {"Idempotency-Key": key if key is not None else str(uuid.uuid4())}


def _wait_error(job: Job, timeout: float) -> WaitTimeoutError:
    return WaitTimeoutError(f"job {job.id} still {job.status} after {timeout:g}s", job=job)


class Jobs:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def create(
        self,
        spec: Mapping[str, Any] | BaseModel | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:
        """Queue a job. Pass the body as `spec=` or as keyword fields (or both; fields win)."""
        return self._client.post_model(
            Job, "/v1/jobs", body=job_body(spec, fields), headers=_idempotency_headers(idempotency_key)
        )

    def get(self, job_id: str) -> Job:
        return self._client.get_model(Job, f"/v1/jobs/{path_id(job_id)}")

    def list_page(
        self,
        *,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        """One page of jobs, newest first."""
        params = {"status": status, "metadata": metadata, "limit": limit, "after": after}
        return self._client.get_model(Page[Job], "/v1/jobs", params=params)

    def list(
        self,
        *,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> SyncPaginator[Job]:
        """Every matching job, newest first; `limit` is the page size, pages are fetched lazily."""
        return SyncPaginator(
            lambda cursor: self.list_page(status=status, metadata=metadata, limit=limit, after=cursor),
            after,
        )

    def cancel(self, job_id: str) -> Job:
        """Queued jobs cancel at once; running ones move to `cancelling` until their worker stops."""
        return self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/cancel")

    def resume(self, job_id: str, *, max_cost_usd: float | None = None) -> Job:
        """Queue a paused job again, or one stopped for its budget (optionally with a higher cap)."""
        body = {"max_cost_usd": max_cost_usd} if max_cost_usd is not None else None
        return self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/resume", body=body)

    def events_page(
        self, job_id: str, *, after: str | None = None, limit: int | None = None, order: str | None = None
    ) -> Page[JobEvent]:
        params = {"after": after, "limit": limit, "order": order}
        return self._client.get_model(Page[JobEvent], f"/v1/jobs/{path_id(job_id)}/events", params=params)

    def events(
        self, job_id: str, *, after: str | None = None, limit: int | None = None
    ) -> SyncPaginator[JobEvent]:
        """Events oldest first; pass the last id seen as `after` to get only newer ones."""
        return SyncPaginator(lambda cursor: self.events_page(job_id, after=cursor, limit=limit), after)

    def checkpoints_page(
        self, job_id: str, *, after: str | None = None, limit: int | None = None
    ) -> Page[Checkpoint]:
        params = {"after": after, "limit": limit}
        return self._client.get_model(
            Page[Checkpoint], f"/v1/jobs/{path_id(job_id)}/checkpoints", params=params
        )

    def checkpoints(self, job_id: str, *, limit: int | None = None) -> SyncPaginator[Checkpoint]:
        """Completed checkpoints, highest step first."""
        return SyncPaginator(lambda cursor: self.checkpoints_page(job_id, after=cursor, limit=limit))

    def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job succeeds, fails, is cancelled or is paused; returns that Job.

        `on_progress(job)` is called after every poll. Raises WaitTimeoutError after `timeout`
        seconds (the job keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.is_settled:
                return job
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _wait_error(job, timeout or 0.0)
                pause = min(pause, remaining)
            self._client._sleep(pause)


class AsyncJobs:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def create(
        self,
        spec: Mapping[str, Any] | BaseModel | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:
        return await self._client.post_model(
            Job, "/v1/jobs", body=job_body(spec, fields), headers=_idempotency_headers(idempotency_key)
        )

    async def get(self, job_id: str) -> Job:
        return await self._client.get_model(Job, f"/v1/jobs/{path_id(job_id)}")

    async def list_page(
        self,
        *,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        params = {"status": status, "metadata": metadata, "limit": limit, "after": after}
        return await self._client.get_model(Page[Job], "/v1/jobs", params=params)

    def list(
        self,
        *,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> AsyncPaginator[Job]:
        return AsyncPaginator(
            lambda cursor: self.list_page(status=status, metadata=metadata, limit=limit, after=cursor),
            after,
        )

    async def cancel(self, job_id: str) -> Job:
        return await self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/cancel")

    async def resume(self, job_id: str, *, max_cost_usd: float | None = None) -> Job:
        body = {"max_cost_usd": max_cost_usd} if max_cost_usd is not None else None
        return await self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/resume", body=body)

    async def events_page(
        self, job_id: str, *, after: str | None = None, limit: int | None = None, order: str | None = None
    ) -> Page[JobEvent]:
        params = {"after": after, "limit": limit, "order": order}
        return await self._client.get_model(
            Page[JobEvent], f"/v1/jobs/{path_id(job_id)}/events", params=params
        )

    def events(
        self, job_id: str, *, after: str | None = None, limit: int | None = None
    ) -> AsyncPaginator[JobEvent]:
        return AsyncPaginator(lambda cursor: self.events_page(job_id, after=cursor, limit=limit), after)

    async def checkpoints_page(
        self, job_id: str, *, after: str | None = None, limit: int | None = None
    ) -> Page[Checkpoint]:
        params = {"after": after, "limit": limit}
        return await self._client.get_model(
            Page[Checkpoint], f"/v1/jobs/{path_id(job_id)}/checkpoints", params=params
        )

    def checkpoints(self, job_id: str, *, limit: int | None = None) -> AsyncPaginator[Checkpoint]:
        return AsyncPaginator(lambda cursor: self.checkpoints_page(job_id, after=cursor, limit=limit))

    async def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        on_progress: Callable[[Job], Any] | None = None,
    ) -> Job:
        """As `Jobs.wait`; `on_progress` may be a plain function or a coroutine function."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                outcome = on_progress(job)
                if hasattr(outcome, "__await__"):
                    await outcome
            if job.is_settled:
                return job
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _wait_error(job, timeout or 0.0)
                pause = min(pause, remaining)
            await self._client._sleep(pause)
