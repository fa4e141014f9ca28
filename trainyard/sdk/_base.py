"""The request loop shared by every call: headers, retries with backoff, error mapping, parsing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from trainyard.sdk._credentials import resolve
from trainyard.sdk._download import write_async, write_sync
from trainyard.sdk._errors import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    make_status_error,
)
from trainyard.sdk._retries import retry_delay, should_retry
from trainyard.sdk._version import __version__

M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2

Params = Mapping[str, Any]
# httpx's `files=`: field name -> (filename, file object or bytes, content type).
FileParts = Mapping[str, tuple[str, Any, str]]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_json(body: Any) -> bytes:
    return json.dumps(body, default=_json_default, separators=(",", ":")).encode()


def clean_params(params: Params | None) -> dict[str, Any]:
    """Drop unset values; spread `metadata={"k": "v"}` into `metadata[k]=v` as the API expects."""
    out: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if name == "metadata" and isinstance(value, Mapping):
            for key, item in value.items():
                out[f"metadata[{key}]"] = str(item)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = value
    return out


def parse_json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIResponseValidationError(
            f"expected JSON from {response.request.method} {response.request.url.path}, "
            f"got {response.headers.get('content-type', 'no content type')}",
            response=response,
        ) from exc


def parse_model(model: type[M], data: Any, response: httpx.Response) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise APIResponseValidationError(
            f"unexpected response shape for {model.__name__}: {exc.errors()[0].get('msg')}",
            response=response,
        ) from exc


class _Core:
    """Configuration and request building common to the sync and async clients."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    max_retries: int

    def _configure(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url, self.api_key = resolve(base_url, api_key)
        if timeout is None:
            self.timeout = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            self.timeout = timeout
        else:
            self.timeout = httpx.Timeout(float(timeout), connect=min(float(timeout), 5.0))
        self.max_retries = max_retries

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": f"trainyard-python/{__version__}",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        method: str,
        path: str,
        params: Params | None,
        body: Any,
        headers: Mapping[str, str] | None,
        files: FileParts | None = None,
    ) -> httpx.Request:
        all_headers = self._headers(headers)
        content = None
        if body is not None and files is None:
            content = encode_json(body)
            all_headers["Content-Type"] = "application/json"
        return http.build_request(
            method,
            f"{self.base_url}{path}",
            params=clean_params(params),
            content=content,
            # A multipart upload: `body` holds its plain fields (httpx sets the content type).
            files=files,
            data=body if files is not None else None,
            headers=all_headers,
            timeout=self.timeout,
        )

    def _transport_error(self, exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            message = f"request to {self.base_url} timed out ({type(exc).__name__})"
            return APITimeoutError(message, request=request)
        detail = f": {exc}" if str(exc) else f": {type(exc).__name__}"
        return APIConnectionError(f"could not reach {self.base_url}{detail}", request=request)

    def _status_error(self, response: httpx.Response) -> Exception:
        hint = None
        if response.status_code == 401 and not self.api_key:
            hint = (
                "no API key was sent: pass api_key=, set TRAINYARD_API_KEY, "
                "or save credentials for this server (trainyard up does)"
            )
        return make_status_error(response, hint=hint)


class SyncAPIClient(_Core):
    """Owns (or borrows) an httpx.Client and runs each request through the retry loop."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        http_client: httpx.Client | None,
    ) -> None:
        self._configure(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)
        # Indirect so that tests (and callers with their own scheduling) can replace the wait.
        self._sleep: Callable[[float], None] = time.sleep

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        files: FileParts | None = None,
    ) -> tuple[Any, httpx.Response]:
        """Send with retries; returns the decoded JSON body and the final response."""
        # One request object for every try: the headers (Idempotency-Key among them) and the
        # body are byte-for-byte the same on a retry (a file being uploaded is read again from
        # its start).
        request = self._build(self._http, method, path, params, body, headers, files)
        retries = 0
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:  # timeouts included
                if retries < self.max_retries:
                    self._sleep(retry_delay(retries, None))
                    retries += 1
                    continue
                raise self._transport_error(exc, request) from exc
            if response.is_success:
                return parse_json(response), response
            if should_retry(response) and retries < self.max_retries:
                response.close()
                self._sleep(retry_delay(retries, response))
                retries += 1
                continue
            raise self._status_error(response)

    def get_model(self, model: type[M], path: str, *, params: Params | None = None) -> M:
        data, response = self.request("GET", path, params=params)
        return parse_model(model, data, response)

    def post_model(
        self,
        model: type[M],
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> M:
        data, response = self.request("POST", path, body=body, headers=headers)
        return parse_model(model, data, response)

    def request_model(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        files: FileParts | None = None,
    ) -> M:
        data, response = self.request(method, path, params=params, body=body, files=files)
        return parse_model(model, data, response)

    def download(self, path: str, dest: Path, *, params: Params | None = None) -> int:
        """GET `path` into the local file `dest` (streamed; whole or not at all); returns its
        size. Retried like any request, a broken transfer included."""
        request = self._build(self._http, "GET", path, params, None, {"Accept": "*/*"})
        retries = 0
        while True:
            try:
                response = self._http.send(request, stream=True)
                try:
                    if response.is_success:
                        return write_sync(response.iter_bytes(), dest)
                    response.read()
                finally:
                    response.close()
            except httpx.TransportError as exc:  # before or during the transfer
                if retries < self.max_retries:
                    self._sleep(retry_delay(retries, None))
                    retries += 1
                    continue
                raise self._transport_error(exc, request) from exc
            if should_retry(response) and retries < self.max_retries:
                self._sleep(retry_delay(retries, response))
                retries += 1
                continue
            raise self._status_error(response)

    def close(self) -> None:
        """Close the connection pool, unless the caller passed in their own http_client."""
        if self._owns_http:
            self._http.close()


class AsyncAPIClient(_Core):
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        self._configure(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        files: FileParts | None = None,
    ) -> tuple[Any, httpx.Response]:
        request = self._build(self._http, method, path, params, body, headers, files)
        retries = 0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:  # timeouts included
                if retries < self.max_retries:
                    await self._sleep(retry_delay(retries, None))
                    retries += 1
                    continue
                raise self._transport_error(exc, request) from exc
            if response.is_success:
                return parse_json(response), response
            if should_retry(response) and retries < self.max_retries:
                await response.aclose()
                await self._sleep(retry_delay(retries, response))
                retries += 1
                continue
            raise self._status_error(response)

    async def get_model(self, model: type[M], path: str, *, params: Params | None = None) -> M:
        data, response = await self.request("GET", path, params=params)
        return parse_model(model, data, response)

    async def post_model(
        self,
        model: type[M],
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> M:
        data, response = await self.request("POST", path, body=body, headers=headers)
        return parse_model(model, data, response)

    async def request_model(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        files: FileParts | None = None,
    ) -> M:
        data, response = await self.request(method, path, params=params, body=body, files=files)
        return parse_model(model, data, response)

    async def download(self, path: str, dest: Path, *, params: Params | None = None) -> int:
        request = self._build(self._http, "GET", path, params, None, {"Accept": "*/*"})
        retries = 0
        while True:
            try:
                response = await self._http.send(request, stream=True)
                try:
                    if response.is_success:
                        return await write_async(response.aiter_bytes(), dest)
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                if retries < self.max_retries:
                    await self._sleep(retry_delay(retries, None))
                    retries += 1
                    continue
                raise self._transport_error(exc, request) from exc
            if should_retry(response) and retries < self.max_retries:
                await self._sleep(retry_delay(retries, response))
                retries += 1
                continue
            raise self._status_error(response)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()
