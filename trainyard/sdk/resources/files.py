"""`client.files`: upload, list, retrieve, download and delete JSONL training files
(`/v1/files`, OpenAI's shapes). Pass a file's id as a job's `training_file`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainyard.sdk._files import FileDeleted, FileObject
from trainyard.sdk._models import Page
from trainyard.sdk._pagination import AsyncPaginator, SyncPaginator
from trainyard.sdk.resources._common import path_id

if TYPE_CHECKING:
    from trainyard.sdk._base import AsyncAPIClient, FileParts, SyncAPIClient

__all__ = ["AsyncFiles", "FileSource", "Files"]

# A path to a local file, its bytes, or an open binary file.
FileSource = str | os.PathLike[str] | bytes | IO[bytes]


def _upload_parts(file: FileSource, filename: str | None, purpose: str) -> tuple[FileParts, dict[str, Any]]:
    content: bytes | IO[bytes]
    if isinstance(file, str | os.PathLike):
        local = Path(file)
        # Opened here and read by httpx as it sends (and again from the start on a retry).
        content, name = local.open("rb"), filename or local.name
    elif isinstance(file, bytes):
        content, name = file, filename or "data.jsonl"
    else:
        content, name = file, filename or Path(str(getattr(file, "name", "data.jsonl"))).name
    return {"file": (name, content, "application/jsonl")}, {"purpose": purpose}


def _close(parts: FileParts) -> None:
    handle = parts["file"][1]
    if hasattr(handle, "close") and not isinstance(handle, bytes):
        handle.close()


def _list_params(
    purpose: str | None, limit: int | None, order: str | None, after: str | None
) -> dict[str, Any]:
    return {"purpose": purpose, "limit": limit, "order": order, "after": after}


class Files:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def upload(
        self, file: FileSource, *, purpose: str = "fine-tune", filename: str | None = None
    ) -> FileObject:
        """Upload a JSONL file (a path, bytes or an open binary file); every line is checked."""
        parts, fields = _upload_parts(file, filename, purpose)
        try:
            return self._client.request_model(FileObject, "POST", "/v1/files", body=fields, files=parts)
        finally:
            if isinstance(file, str | os.PathLike):
                _close(parts)

    def list_page(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[FileObject]:
        params = _list_params(purpose, limit, order, after)
        return self._client.get_model(Page[FileObject], "/v1/files", params=params)

    def list(
        self, *, purpose: str | None = None, limit: int | None = None, order: str | None = None
    ) -> SyncPaginator[FileObject]:
        """Every file the team uploaded (newest first unless `order="asc"`), fetched page by page."""
        return SyncPaginator(
            lambda cursor: self.list_page(purpose=purpose, limit=limit, order=order, after=cursor)
        )

    def retrieve(self, file_id: str) -> FileObject:
        return self._client.get_model(FileObject, f"/v1/files/{path_id(file_id)}")

    def download(self, file_id: str, path: str | os.PathLike[str]) -> Path:
        """Write the file's content to the local file `path`; returns it."""
        dest = Path(path)
        self._client.download(f"/v1/files/{path_id(file_id)}/content", dest)
        return dest

    def delete(self, file_id: str) -> FileDeleted:
        """Delete a file (ConflictError while an unfinished job still reads it)."""
        return self._client.request_model(FileDeleted, "DELETE", f"/v1/files/{path_id(file_id)}")


class AsyncFiles:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def upload(
        self, file: FileSource, *, purpose: str = "fine-tune", filename: str | None = None
    ) -> FileObject:
        parts, fields = _upload_parts(file, filename, purpose)
        try:
            return await self._client.request_model(FileObject, "POST", "/v1/files", body=fields, files=parts)
        finally:
            if isinstance(file, str | os.PathLike):
                _close(parts)

    async def list_page(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[FileObject]:
        params = _list_params(purpose, limit, order, after)
        return await self._client.get_model(Page[FileObject], "/v1/files", params=params)

    def list(
        self, *, purpose: str | None = None, limit: int | None = None, order: str | None = None
    ) -> AsyncPaginator[FileObject]:
        return AsyncPaginator(
            lambda cursor: self.list_page(purpose=purpose, limit=limit, order=order, after=cursor)
        )

    async def retrieve(self, file_id: str) -> FileObject:
        return await self._client.get_model(FileObject, f"/v1/files/{path_id(file_id)}")

    async def download(self, file_id: str, path: str | os.PathLike[str]) -> Path:
        dest = Path(path)
        await self._client.download(f"/v1/files/{path_id(file_id)}/content", dest)
        return dest

    async def delete(self, file_id: str) -> FileDeleted:
        return await self._client.request_model(FileDeleted, "DELETE", f"/v1/files/{path_id(file_id)}")
