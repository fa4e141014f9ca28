"""`client.instance_types`: the catalog this deployment prices jobs against."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

import httpx

from trainyard.sdk._base import parse_model
from trainyard.sdk._models import InstanceType, Page

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncInstanceTypes", "InstanceTypes"]


def _parse(data: Any, response: httpx.Response) -> list[InstanceType]:
    # The catalog is small and comes in one response: a list object, or a bare array.
    if isinstance(data, list):
        data = {"data": data}
    return parse_model(Page[InstanceType], data, response).data


class InstanceTypes:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def list(self) -> builtins.list[InstanceType]:
        data, response = self._client.request("GET", "/v1/instance-types")
        return _parse(data, response)


class AsyncInstanceTypes:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[InstanceType]:
        data, response = await self._client.request("GET", "/v1/instance-types")
        return _parse(data, response)
