"""``LocalStore``: the store as a plain directory (``file://``), written atomically.

The embedded default (``trainyard up``) and a fast stand-in for S3 in unit tests.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from trainyard.platform.storage.base import MB, ObjectStore, local_files
from trainyard.platform.storage.errors import ObjectNotFound, StorageError
from trainyard.platform.storage.keys import (
    TMP_PREFIX,
    check_prefix,
    join_uri,
    nonempty_prefix,
    relative_key,
    safe_key,
)

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["LocalStore", "file_size", "local_errors", "private_dirs", "read_file_prefix"]


def private_dirs(path: Path) -> Path:
    """``mkdir -p path`` where every directory it creates is 0700 (owner only); returns ``path``.

    ``Path.mkdir(parents=True, mode=...)`` applies the mode to the last directory only. Directories
    that exist already are left as they are.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent writer
            directory.mkdir(mode=0o700)
    return path


def _atomic_write(dest: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``dest`` through a temporary file in the same directory, then rename it into place.

    The rename is atomic on POSIX, so readers see the old object or the new one, never a part;
    the fsync before it keeps a power loss from leaving a renamed but empty file. mkstemp creates
    the file 0600, so an object (a dataset, a model, a key) is never readable by others, not even
    while it is being written.
    """
    private_dirs(dest.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _copy_from(source: Path) -> Callable[[IO[bytes]], None]:
    def write(out: IO[bytes]) -> None:
        with source.open("rb") as src:
            shutil.copyfileobj(src, out, 4 * MB)

    return write


@contextlib.contextmanager
def local_errors(uri: str) -> Iterator[None]:
    """On reads, a missing file (or a directory where a file should be) is ObjectNotFound."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ObjectNotFound(f"no object at {uri}") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: {exc}") from exc


def file_size(path: Path) -> int:
    """The size of the regular file ``path``, by stat; a directory is IsADirectoryError."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(f"not a regular file: {path}")
    return info.st_size


def read_file_prefix(path: Path, max_bytes: int) -> bytes:
    """The first ``max_bytes`` bytes of the regular file ``path``; anything else is IsADirectoryError."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; on a regular file
    # it changes nothing.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"not a regular file: {path}")
        return fh.read(max(0, max_bytes))


@contextlib.contextmanager
def _write_errors(uri: str) -> Iterator[None]:
    # On writes a missing path is not "object not found" but a failure of the store.
    try:
        yield
    except OSError as exc:
        raise StorageError(f"writing {uri}: {exc}") from exc


class LocalStore(ObjectStore):
    """The store as a plain directory: the embedded default and a fast stand-in for S3 in tests."""

    def __init__(self, root: str | Path) -> None:
        # abspath rather than resolve(): keep the path the operator gave, symlinks included.
        self.root = Path(os.path.abspath(root))
        self.root_uri = "file://" + self.root.as_posix()

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def _dir(self, prefix: str) -> Path:
        checked = check_prefix(prefix)
        return self.root / checked if checked else self.root

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        path = self._path(key)

        # A file has no content type; callers that care keep it in the key's suffix.
        def write(out: IO[bytes]) -> None:
            out.write(data)

        with _write_errors(self.uri_for(key)):
            _atomic_write(path, write)
        return self.uri_for(key)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with local_errors(self.uri_for(key)):
            return path.read_bytes()

    def size(self, key: str) -> int:
        with local_errors(self.uri_for(key)):
            return file_size(self._path(key))

    def read_prefix(self, key: str, max_bytes: int) -> bytes:
        with local_errors(self.uri_for(key)):
            return read_file_prefix(self._path(key), max_bytes)

    def put_file(self, key: str, path: str | Path) -> str:
        dest = self._path(key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        with _write_errors(self.uri_for(key)):
            _atomic_write(dest, _copy_from(source))
        return self.uri_for(key)

    def get_file(self, key: str, path: str | Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"no object at {self.uri_for(key)}")
        with _write_errors(self.uri_for(key)):
            _atomic_write(Path(path), _copy_from(source))

    def upload_dir(self, prefix: str, local_dir: str | Path) -> str:
        checked = check_prefix(prefix)
        for relative, source in local_files(Path(local_dir)):
            key = safe_key(checked, relative) if checked else safe_key(relative)
            with _write_errors(self.uri_for(key)):
                _atomic_write(self.root / key, _copy_from(source))
        return join_uri(self.root_uri, checked)

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        checked = check_prefix(prefix)
        keys = self.list(checked)
        if not keys:
            raise ObjectNotFound(f"no objects under {join_uri(self.root_uri, checked)}")
        target = Path(local_dir)
        for key in keys:
            self.get_file(key, target / safe_key(relative_key(key, checked)))
        return target

    def list(self, prefix: str = "") -> builtins.list[str]:
        base = self._dir(prefix)
        if not base.is_dir():
            return []
        keys = [
            Path(dirpath, name).relative_to(self.root).as_posix()
            for dirpath, _dirs, files in os.walk(base)
            for name in files
            if not name.startswith(TMP_PREFIX)
        ]
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        checked = nonempty_prefix(prefix)
        count = len(self.list(checked))
        base = self.root / checked
        if base.is_dir():
            with _write_errors(join_uri(self.root_uri, checked)):
                shutil.rmtree(base)
        return count

    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        import pyarrow.fs

        path = private_dirs(self._dir(prefix))
        return str(path), pyarrow.fs.LocalFileSystem()
