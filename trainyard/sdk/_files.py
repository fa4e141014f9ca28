"""Uploaded files as `/v1/files` answers (OpenAI's shapes: times in Unix seconds)."""

from __future__ import annotations

from datetime import UTC, datetime

from trainyard.sdk._models import TrainyardModel

__all__ = ["FileDeleted", "FileObject"]


class FileObject(TrainyardModel):
    """An uploaded JSONL file; pass its `id` as a job's `training_file` or `validation_file`."""

    id: str
    object: str = "file"
    bytes: int = 0
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None
    line_count: int | None = None

    @property
    def created(self) -> datetime | None:
        """`created_at` as a datetime (UTC)."""
        return None if self.created_at is None else datetime.fromtimestamp(self.created_at, UTC)


class FileDeleted(TrainyardModel):
    id: str
    object: str = "file"
    deleted: bool = False
