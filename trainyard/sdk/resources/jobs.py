"""`client.jobs`: create, get, list, cancel, move, pause, resume, events, checkpoints, logs, wait,
and what a job leaves behind: its cost report and its final model (`model_files`, `download`)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trainyard.sdk._download import local_target
from trainyard.sdk._errors import TrainyardError, WaitTimeoutError
from trainyard.sdk._models import Checkpoint, Job, JobEvent, JobLog, Page
from trainyard.sdk._pagination import AsyncPaginator, SyncPaginator
from trainyard.sdk._results import JobCostReport, ModelFile, ModelFiles
from trainyard.sdk.resources._common import job_body, path_id, path_in_url

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncJobs", "Jobs"]


def _idempotency_headers(key: str | None) -> dict[str, str]:
    # A fresh key per call, kept for that call's retries: a create retried after a lost response
    # returns the job the first try made instead of queueing a second one.
    return {"Idempotency-Key": key if key is not None else str(uuid.uuid4())}


def _move_body(instance_type: str, spot: bool | None) -> dict[str, Any]:
    return {"instance_type": instance_type, **({"spot": spot} if spot is not None else {})}


def _wait_error(job: Job, timeout: float) -> WaitTimeoutError:
    return WaitTimeoutError(f"job {job.id} still {job.status} after {timeout:g}s", job=job)


def _file_route(job_id: str, file: ModelFile) -> str:
    return f"/v1/jobs/{path_id(job_id)}/model/{path_in_url(file.path)}"


def _check_size(file: ModelFile, target: Path, written: int) -> None:
    if written != file.bytes:
        raise TrainyardError(f"{target}: got {written} bytes of {file.path}, expected {file.bytes}")


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

    def move(self, job_id: str, *, instance_type: str, spot: bool | None = None) -> Job:
        """Move a queued job to the pool of `instance_type` (spot or on-demand capacity, or as
        its policy chooses when `spot` is None), re-planned there; it stays on that type. Moving
        it where it already is changes nothing, so a retry is safe. `job.queue.alternatives`
        names the pools that would start it sooner."""
        return self._client.post_model(
            Job, f"/v1/jobs/{path_id(job_id)}/move", body=_move_body(instance_type, spot)
        )

    def pause(self, job_id: str) -> Job:
        """A queued job pauses at once; a running one saves a checkpoint, frees its instance and
        pauses (`pause_requested` until then). Pausing twice is not an error."""
        return self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/pause")

    def resume(self, job_id: str, *, max_cost_usd: float | None = None) -> Job:
        """Queue a paused job again, or one stopped for its budget (optionally with a higher cap)."""
        body = {"max_cost_usd": max_cost_usd} if max_cost_usd is not None else None
        return self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/resume", body=body)

    def cost_report(self, job_id: str) -> JobCostReport:
        """The job's cost report: the one published when it ended, else the figures so far."""
        return self._client.get_model(JobCostReport, f"/v1/jobs/{path_id(job_id)}/cost-report")

    def model_files(self, job_id: str) -> ModelFiles:
        """The files of the job's final model (NotFoundError until the job has one)."""
        return self._client.get_model(ModelFiles, f"/v1/jobs/{path_id(job_id)}/model")

    def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Download the job's final model (a `save_pretrained` directory) into the directory
        `path`, created if needed; returns it. Each file is written whole or not at all."""
        root = Path(path)
        for file in self.model_files(job_id).data:
            target = local_target(root, file.path)
            _check_size(file, target, self._client.download(_file_route(job_id, file), target))
        root.mkdir(parents=True, exist_ok=True)
        return root

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

    def logs(
        self, job_id: str, *, attempt: int | None = None, after: int = 0, tail: int | None = None
    ) -> JobLog:
        """An attempt's log (default: the latest attempt's) from byte ``after``, or its last
        ``tail`` lines."""
        params = {"attempt": attempt, "after": after, "tail": tail}
        return self._client.get_model(JobLog, f"/v1/jobs/{path_id(job_id)}/logs", params=params)

    def follow_logs(self, job_id: str, *, poll_interval: float = 1.0, settle: float = 30.0) -> Iterator[str]:
        """The job's log as it is written, attempt after attempt, until the job has settled
        (succeeded, failed, cancelled, paused) and its last attempt's log is read to the end
        (or, if a worker died before shipping all of it, `settle` seconds after the job did)."""
        attempt, after = 1, 0
        settled_at: float | None = None
        while True:
            job = self.get(job_id)
            if job.attempts >= attempt:
                piece = self.logs(job_id, attempt=attempt, after=after)
                if piece.data:
                    yield piece.data
                    after = piece.next_offset
                    continue
                if piece.complete and job.attempts > attempt:
                    attempt, after = attempt + 1, 0  # a retry or a resume: its log follows
                    continue
                if piece.complete and job.is_settled:
                    return
            elif job.is_settled:
                return  # it ended without an attempt (cancelled while queued)
            if job.is_settled:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at > settle:
                    return
            self._client._sleep(poll_interval)

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

    async def move(self, job_id: str, *, instance_type: str, spot: bool | None = None) -> Job:
        return await self._client.post_model(
            Job, f"/v1/jobs/{path_id(job_id)}/move", body=_move_body(instance_type, spot)
        )

    async def pause(self, job_id: str) -> Job:
        return await self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/pause")

    async def resume(self, job_id: str, *, max_cost_usd: float | None = None) -> Job:
        body = {"max_cost_usd": max_cost_usd} if max_cost_usd is not None else None
        return await self._client.post_model(Job, f"/v1/jobs/{path_id(job_id)}/resume", body=body)

    async def cost_report(self, job_id: str) -> JobCostReport:
        return await self._client.get_model(JobCostReport, f"/v1/jobs/{path_id(job_id)}/cost-report")

    async def model_files(self, job_id: str) -> ModelFiles:
        return await self._client.get_model(ModelFiles, f"/v1/jobs/{path_id(job_id)}/model")

    async def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        root = Path(path)
        for file in (await self.model_files(job_id)).data:
            target = local_target(root, file.path)
            _check_size(file, target, await self._client.download(_file_route(job_id, file), target))
        root.mkdir(parents=True, exist_ok=True)
        return root

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

    async def logs(
        self, job_id: str, *, attempt: int | None = None, after: int = 0, tail: int | None = None
    ) -> JobLog:
        params = {"attempt": attempt, "after": after, "tail": tail}
        return await self._client.get_model(JobLog, f"/v1/jobs/{path_id(job_id)}/logs", params=params)

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
