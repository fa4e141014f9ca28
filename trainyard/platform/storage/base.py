"""The ``ObjectStore`` interface: a flat key -> bytes store rooted at a URI.

Two implementations: ``S3Store`` (s3.py) and ``LocalStore`` (local.py). Unit tests that need a store
use a ``LocalStore`` on a temporary directory; integration tests use ``S3Store`` against a moto server.
"""

from __future__ import annotations

import builtins
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from trainyard.platform.storage.keys import join_uri, safe_key

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["MB", "ObjectStore", "local_files"]

MB = 1024 * 1024


class ObjectStore(ABC):
    """A flat key -> bytes store rooted at ``root_uri``; keys are ``/``-separated and relative to it.

    Every method checks its key or prefix by the rules of ``safe_key``. ``list``, ``delete_prefix`` and
    ``download_dir`` act on the keys under ``prefix/``, as if prefixes were directories.
    """

    root_uri: str

    def uri_for(self, key: str) -> str:
        """The full URI of ``key`` (``s3://bucket/root/key`` or ``file:///root/key``)."""
        return join_uri(self.root_uri, safe_key(key))

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` at ``key`` (replacing any object there); return its URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object at ``key``; raise ObjectNotFound when there is none."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The size in bytes of the object at ``key``, from its metadata (HEAD, stat), reading none
        of it; raise ObjectNotFound when there is none."""

    @abstractmethod
    def read_prefix(self, key: str, max_bytes: int) -> bytes:
        """The first ``max_bytes`` bytes of the object at ``key`` (all of it when shorter), without
        reading the rest; raise ObjectNotFound when there is none."""

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> str:
        """Upload the local file ``path`` to ``key``; return its URI."""

    @abstractmethod
    def get_file(self, key: str, path: str | Path) -> None:
        """Download ``key`` to the local ``path`` (parents created; the file appears whole or not at all)."""

    @abstractmethod
    def upload_dir(self, prefix: str, local_dir: str | Path) -> str:
        """Upload every file under ``local_dir`` to ``prefix/<relative path>``; return the prefix's URI."""

    @abstractmethod
    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        """Download every object under ``prefix/`` into ``local_dir``; ObjectNotFound if there is none."""

    # builtins.list: inside the class body, ``list`` is the method below.
    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys under ``prefix/`` (all of them for ``""``), relative to the root, sorted."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is at ``key``; a prefix with objects under it is not one."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/``; return how many. The empty prefix is refused."""

    @abstractmethod
    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig``, pointing at ``prefix``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


def local_files(local_dir: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of each file under ``local_dir``, in a stable order."""
    if not local_dir.is_dir():
        raise NotADirectoryError(f"not a directory: {local_dir}")
    for dirpath, dirs, files in os.walk(local_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath, name)
            yield path.relative_to(local_dir).as_posix(), path
