"""Object storage: one interface over ``s3://bucket/prefix`` (boto3) and ``file:///abs/path``.

- ``errors``: StorageError and its kinds, the only errors the store raises for a failed operation.
- ``keys``: the key rules every store checks on every call (no traversal, no control characters).
- ``layout``: where a job's checkpoints, final model and cost report live under the store's root.
- ``base``: the ObjectStore interface.
- ``local``: LocalStore, a directory with atomic writes (the embedded default, unit tests).
- ``s3``: S3Store, boto3 with retries, multipart transfers and one client per store.
- ``transfers``: S3Options, and part sizes fitted to the object so a transfer moves in one round.
- ``uris``: parsing storage URIs; ``open_store``, ``read_uri``, ``uri_size``, ``read_uri_prefix``,
  ``download_uri_dir``.

Importing the package imports neither boto3 nor pyarrow; each store imports them on first use.
"""

from __future__ import annotations

from trainyard.platform.storage.base import MB, ObjectStore
from trainyard.platform.storage.errors import InvalidKey, InvalidURI, ObjectNotFound, StorageError
from trainyard.platform.storage.keys import MAX_KEY_BYTES, safe_key
from trainyard.platform.storage.layout import (
    attempt_prefix,
    checkpoints_prefix,
    cost_report_key,
    dataset_key,
    final_model_prefix,
    job_prefix,
    logs_prefix,
)
from trainyard.platform.storage.local import LocalStore
from trainyard.platform.storage.s3 import S3Options, S3Store
from trainyard.platform.storage.uris import download_uri_dir, open_store, read_uri, read_uri_prefix, uri_size

__all__ = [
    "MAX_KEY_BYTES",
    "MB",
    "InvalidKey",
    "InvalidURI",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Options",
    "S3Store",
    "StorageError",
    "attempt_prefix",
    "checkpoints_prefix",
    "cost_report_key",
    "dataset_key",
    "download_uri_dir",
    "final_model_prefix",
    "job_prefix",
    "logs_prefix",
    "open_store",
    "read_uri",
    "read_uri_prefix",
    "safe_key",
    "uri_size",
]
