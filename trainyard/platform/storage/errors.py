"""The errors of the object store: every boto3, botocore and OS failure is turned into one of these.

They live apart from the interface because the key rules raise them too, and the interface depends
on the key rules.
"""

from __future__ import annotations

from trainyard.platform.errors import TrainyardError

__all__ = ["InvalidKey", "InvalidURI", "ObjectNotFound", "StorageError"]


class StorageError(TrainyardError):
    """The object store failed or refused an operation."""

    status = 503
    code = "storage_unavailable"


class ObjectNotFound(StorageError):
    status = 404
    code = "not_found"


class InvalidKey(StorageError, ValueError):
    """A key or prefix breaks the key rules (traversal, absolute, control characters, empty parts)."""

    status = 400
    code = "invalid_request"


class InvalidURI(InvalidKey):
    """A storage URI that is neither ``s3://bucket[/prefix]`` nor ``file://``/a local path."""
