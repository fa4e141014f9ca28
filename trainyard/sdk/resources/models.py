"""`client.models`: the models a job may start from (base models and the team's fine-tunes)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

import httpx

from trainyard.sdk._base import parse_model
from trainyard.sdk._models import Model, Page
from trainyard.sdk.resources._common import path_id

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, SyncAPIClient

__all__ = ["AsyncModels", "Models"]


def _parse(data: Any, response: httpx.Response) -> list[Model]:
    # The list is one response, as OpenAI's is: no pages.
    return parse_model(Page[Model], data, response).data


class Models:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def list(self) -> builtins.list[Model]:
        """The team's fine-tuned models (newest first), then the base models the platform knows."""
        data, response = self._client.request("GET", "/v1/models")
        return _parse(data, response)

    def retrieve(self, model_id: str) -> Model:
        """One model by id: a hub id (`meta-llama/Llama-3.1-8B`) or an ft id."""
        return self._client.get_model(Model, f"/v1/models/{path_id(model_id)}")


class AsyncModels:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[Model]:
        data, response = await self._client.request("GET", "/v1/models")
        return _parse(data, response)

    async def retrieve(self, model_id: str) -> Model:
        return await self._client.get_model(Model, f"/v1/models/{path_id(model_id)}")
