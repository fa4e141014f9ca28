"""`client.estimates`: what a job would cost and take on each instance type, and which one the
policy picks, without queueing it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trainyard.sdk._models import Estimate
from trainyard.sdk.resources._common import job_body

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncEstimates", "Estimates"]


class Estimates:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def create(self, spec: Mapping[str, Any] | BaseModel | None = None, **fields: Any) -> Estimate:
        """Estimate a job spec (the same body as `jobs.create`)."""
        return self._client.post_model(Estimate, "/v1/estimates", body=job_body(spec, fields))


class AsyncEstimates:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def create(self, spec: Mapping[str, Any] | BaseModel | None = None, **fields: Any) -> Estimate:
        return await self._client.post_model(Estimate, "/v1/estimates", body=job_body(spec, fields))
