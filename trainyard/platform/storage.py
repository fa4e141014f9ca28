"""Object storage: one interface over ``s3://bucket/prefix`` (boto3) and ``file:///abs/path``.

The platform keeps everything a job leaves behind under the store at TRAINYARD_STORAGE_URI::

    jobs/{job_id}/checkpoints/...     Ray Train's storage (RunConfig storage_path/storage_filesystem)
    jobs/{job_id}/final/              the trained model, a save_pretrained directory
    jobs/{job_id}/cost_report.json
    datasets/...

Keys are relative to the store's root, use ``/`` as the separator and are validated by the rules of
``safe_key`` on every call, so a key built from user input can never step outside the root.
"Directories" are prefixes: ``list``, ``delete_prefix`` and ``download_dir`` act on the keys under
``prefix/``, so ``jobs/j1`` never matches ``jobs/j10/...``.

S3 endpoint, region and credentials come from boto3's own resolution (AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL, AWS_* variables, ~/.aws files, instance roles); nothing here re-reads them.
boto3 and pyarrow are imported on first use so that importing this module stays cheap.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import os
import shutil
import tempfile
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from trainyard.platform.errors import TrainyardError

if TYPE_CHECKING:
    import pyarrow.fs

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
    "checkpoints_prefix",
    "cost_report_key",
    "dataset_key",
    "download_uri_dir",
    "final_model_prefix",
    "job_prefix",
    "open_store",
    "read_uri",
    "safe_key",
]

MB = 1024 * 1024
# S3's limit on a key, in UTF-8 bytes; the file store keeps the same limit so both accept the same keys.
MAX_KEY_BYTES = 1024
# Temporary files of atomic local writes start with this; list() skips them and safe_key refuses
# keys that use it, so a crash's leftovers never show up as objects.
_TMP_PREFIX = ".trainyard-tmp-"


# --------------------------------------------------------------------------------------------- errors


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


# ----------------------------------------------------------------------------------------------- keys


def _check_segment(segment: str, key: str) -> None:
    if segment == "":
        raise InvalidKey(f"empty path segment in key {key!r}")
    if segment in (".", ".."):
        raise InvalidKey(f"'.' and '..' are not allowed in key {key!r}")
    if "\\" in segment:
        raise InvalidKey(f"backslash in key {key!r}")
    # Category Cc covers C0 controls, DEL and C1 controls: newlines and NULs in keys break logs,
    # local filenames and signatures alike.
    if any(unicodedata.category(c) == "Cc" for c in segment):
        raise InvalidKey(f"control character in key {key!r}")
    if segment.startswith(_TMP_PREFIX):
        raise InvalidKey(f"key segments must not start with {_TMP_PREFIX!r}: {key!r}")


def safe_key(*parts: str) -> str:
    """Join key parts with ``/`` after checking each; raise InvalidKey if any part is unsafe.

    A part may itself contain ``/`` (``"checkpoints/step_1"``); every segment must be non-empty and
    must not be ``.`` or ``..``, contain a backslash or a control character. Absolute parts are refused.
    """
    if not parts:
        raise InvalidKey("a key needs at least one part")
    segments: builtins.list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise InvalidKey(f"key parts must be strings, got {type(part).__name__}")
        if part.startswith("/"):
            raise InvalidKey(f"absolute key {part!r}")
        for segment in part.split("/"):
            _check_segment(segment, part)
            segments.append(segment)
    key = "/".join(segments)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    return key


def _prefix(prefix: str) -> str:
    """Validate a prefix: like a key, but ``""`` (the root) and one trailing ``/`` are allowed."""
    if prefix in ("", "/"):
        return ""
    return safe_key(prefix.removesuffix("/"))


def _single_segment(value: str, what: str) -> str:
    if "/" in value:
        raise InvalidKey(f"{what} must not contain '/': {value!r}")
    return safe_key(value)


def job_prefix(job_id: str) -> str:
    """``jobs/{job_id}``: everything a job writes lives under this prefix."""
    return safe_key("jobs", _single_segment(job_id, "job id"))


def checkpoints_prefix(job_id: str) -> str:
    """``jobs/{job_id}/checkpoints``: pass to ``ObjectStore.ray_storage`` for Ray Train's RunConfig."""
    return safe_key(job_prefix(job_id), "checkpoints")


def final_model_prefix(job_id: str) -> str:
    """``jobs/{job_id}/final``: the trained model as a save_pretrained directory."""
    return safe_key(job_prefix(job_id), "final")


def cost_report_key(job_id: str) -> str:
    return safe_key(job_prefix(job_id), "cost_report.json")


def dataset_key(*parts: str) -> str:
    """``datasets/...``: uploaded datasets."""
    return safe_key("datasets", *parts)


def _join_uri(root_uri: str, key: str) -> str:
    if not key:
        return root_uri
    return root_uri + key if root_uri.endswith("/") else f"{root_uri}/{key}"


def _relative(key: str, prefix: str) -> str:
    return key[len(prefix) + 1 :] if prefix else key


# ---------------------------------------------------------------------------------------- interface


class ObjectStore(ABC):
    """A flat key -> bytes store rooted at ``root_uri``; keys are ``/``-separated and relative to it."""

    root_uri: str

    def uri_for(self, key: str) -> str:
        """The full URI of ``key`` (``s3://bucket/root/key`` or ``file:///root/key``)."""
        return _join_uri(self.root_uri, safe_key(key))

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` at ``key`` (replacing any object there); return its URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object at ``key``; raise ObjectNotFound when there is none."""

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

    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys under ``prefix/`` (all of them for ``""``), relative to the root, sorted."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/``; return how many. The empty prefix is refused."""

    @abstractmethod
    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig``, pointing at ``prefix``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


def _nonempty_prefix(prefix: str) -> str:
    checked = _prefix(prefix)
    if not checked:
        # Deleting the whole store by passing "" by mistake is too easy; callers name what they delete.
        raise InvalidKey("delete_prefix needs a non-empty prefix")
    return checked


# ------------------------------------------------------------------------------------- local files


def _atomic_write(dest: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``dest`` through a temporary file in the same directory, then rename it into place.

    The rename is atomic on POSIX, so readers see the old object or the new one, never a part;
    the fsync before it keeps a power loss from leaving a renamed but empty file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            # mkstemp makes 0600 files; stored objects and downloads should read like ordinary files.
            os.fchmod(tmp.fileno(), 0o644)
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
def _local_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ObjectNotFound(f"no object at {uri}") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: {exc}") from exc


class LocalStore(ObjectStore):
    """The store as a plain directory: the embedded default and a fast stand-in for S3 in tests."""

    def __init__(self, root: str | Path) -> None:
        # abspath rather than resolve(): keep the path the operator gave, symlinks included.
        self.root = Path(os.path.abspath(root))
        self.root_uri = "file://" + self.root.as_posix()

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def _dir(self, prefix: str) -> Path:
        checked = _prefix(prefix)
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
        with _local_errors(self.uri_for(key)):
            return path.read_bytes()

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
        checked = _prefix(prefix)
        for relative, source in _local_files(Path(local_dir)):
            key = safe_key(checked, relative) if checked else safe_key(relative)
            with _write_errors(self.uri_for(key)):
                _atomic_write(self.root / key, _copy_from(source))
        return _join_uri(self.root_uri, checked)

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        checked = _prefix(prefix)
        keys = self.list(checked)
        if not keys:
            raise ObjectNotFound(f"no objects under {_join_uri(self.root_uri, checked)}")
        target = Path(local_dir)
        for key in keys:
            self.get_file(key, target / safe_key(_relative(key, checked)))
        return target

    def list(self, prefix: str = "") -> builtins.list[str]:
        base = self._dir(prefix)
        if not base.is_dir():
            return []
        keys = [
            Path(dirpath, name).relative_to(self.root).as_posix()
            for dirpath, _dirs, files in os.walk(base)
            for name in files
            if not name.startswith(_TMP_PREFIX)
        ]
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        checked = _nonempty_prefix(prefix)
        count = len(self.list(checked))
        base = self.root / checked
        if base.is_dir():
            with _write_errors(_join_uri(self.root_uri, checked)):
                shutil.rmtree(base)
        return count

    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        import pyarrow.fs

        path = self._dir(prefix)
        path.mkdir(parents=True, exist_ok=True)
        return str(path), pyarrow.fs.LocalFileSystem()


def _local_files(local_dir: Path) -> Iterator[tuple[str, Path]]:
    if not local_dir.is_dir():
        raise NotADirectoryError(f"not a directory: {local_dir}")
    for dirpath, dirs, files in os.walk(local_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath, name)
            yield path.relative_to(local_dir).as_posix(), path


@contextlib.contextmanager
def _write_errors(uri: str) -> Iterator[None]:
    # On writes a missing path is not "object not found" but a failure of the store.
    try:
        yield
    except OSError as exc:
        raise StorageError(f"writing {uri}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Options:
    """Transfer and retry settings for S3Store.

    Objects at or above ``multipart_threshold`` go up and down in ``multipart_chunksize`` parts,
    ``max_concurrency`` at a time. Throttling (SlowDown, 503) and transient errors are retried by
    botocore and by pyarrow's S3 client; ``max_attempts`` counts every try, the first included, and
    ``retry_mode`` "adaptive" also rate-limits the client after throttling.
    """

    multipart_threshold: int = 8 * MB
    multipart_chunksize: int = 8 * MB
    max_concurrency: int = 10
    max_attempts: int = 10
    retry_mode: Literal["standard", "adaptive"] = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        # S3 refuses parts under 5 MiB (except the last), so smaller chunks would fail mid-upload.
        if self.multipart_chunksize < 5 * MB:
            raise ValueError("multipart_chunksize must be at least 5 MiB")
        if self.multipart_threshold < 1 or self.max_concurrency < 1 or self.max_attempts < 1:
            raise ValueError("multipart_threshold, max_concurrency and max_attempts must be positive")

    def transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            # The CRT transfer client ignores most of these settings and builds its own connection;
            # "classic" keeps the behaviour the same on every host.
            preferred_transfer_client="classic",
        )


_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn boto3/botocore errors into StorageError / ObjectNotFound, once, here."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFound(f"no object at {uri}") from exc
        raise StorageError(f"{uri}: {code or 'error'}: {error.get('Message', exc)}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(f"{uri}: {exc}") from exc


class S3Store(ObjectStore):
    """The store in an S3 (or S3-compatible) bucket under an optional prefix.

    ``session`` is a boto3 Session to take credentials and settings from (a named profile, explicit
    keys); by default a new one resolves them the standard way, on first use.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        options: S3Options | None = None,
        session: Any = None,
    ) -> None:
        if not bucket or "/" in bucket or any(unicodedata.category(c) == "Cc" for c in bucket):
            raise InvalidURI(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = _prefix(prefix)
        self.options = options or S3Options()
        self.root_uri = _join_uri(f"s3://{bucket}", self.prefix)
        self._session = session
        self._s3: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use so that opening a store touches neither disk nor network."""
        if self._s3 is None:
            with self._lock:
                if self._s3 is None:
                    import boto3
                    from botocore.config import Config

                    if self._session is None:
                        self._session = boto3.session.Session()
                    config = Config(
                        # total_max_attempts counts the first try, as pyarrow's max_attempts does;
                        # botocore's "max_attempts" would count retries only.
                        retries={
                            "total_max_attempts": self.options.max_attempts,
                            "mode": self.options.retry_mode,
                        },
                        # One connection per transfer thread, or urllib3 drops and reopens them.
                        max_pool_connections=max(10, self.options.max_concurrency + 2),
                        connect_timeout=self.options.connect_timeout,
                        read_timeout=self.options.read_timeout,
                    )
                    self._s3 = self._session.client("s3", config=config)
        return self._s3

    def _key(self, key: str) -> str:
        checked = safe_key(key)
        return f"{self.prefix}/{checked}" if self.prefix else checked

    def _list_prefix(self, prefix: str) -> str:
        checked = _prefix(prefix)
        full = "/".join(p for p in (self.prefix, checked) if p)
        return f"{full}/" if full else ""

    def _transfer(self) -> Any:
        from boto3.s3.transfer import create_transfer_manager

        return create_transfer_manager(self.client, self.options.transfer_config())

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        full = self._key(key)
        uri = self.uri_for(key)
        extra = {"ContentType": content_type} if content_type else {}
        with _s3_errors(uri):
            if len(data) < self.options.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
            else:
                with self._transfer() as manager:
                    manager.upload(io.BytesIO(data), self.bucket, full, extra_args=extra or None).result()
        return uri

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with _s3_errors(self.uri_for(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())

    def put_file(self, key: str, path: str | Path) -> str:
        full = self._key(key)
        uri = self.uri_for(key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        with _s3_errors(uri), self._transfer() as manager:
            manager.upload(str(source), self.bucket, full).result()
        return uri

    def get_file(self, key: str, path: str | Path) -> None:
        full = self._key(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer writes to a temporary name next to the target and renames it when complete.
        with _s3_errors(self.uri_for(key)), self._transfer() as manager:
            manager.download(self.bucket, full, str(target)).result()

    def upload_dir(self, prefix: str, local_dir: str | Path) -> str:
        checked = _prefix(prefix)
        uploads = [
            (self._key(safe_key(checked, relative) if checked else relative), source)
            for relative, source in _local_files(Path(local_dir))
        ]
        uri = _join_uri(self.root_uri, checked)
        # One transfer manager for all files: small files go up in parallel, large ones in parts,
        # under one concurrency limit. Leaving the block on an error cancels what is still queued.
        with _s3_errors(uri), self._transfer() as manager:
            futures = [manager.upload(str(source), self.bucket, key) for key, source in uploads]
            for future in futures:
                future.result()
        return uri

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        checked = _prefix(prefix)
        keys = self.list(checked)
        if not keys:
            raise ObjectNotFound(f"no objects under {_join_uri(self.root_uri, checked)}")
        target = Path(local_dir)
        # Re-check each relative key: objects written by others (a user's model dir) could carry
        # '..' segments that would otherwise land outside local_dir.
        downloads = [(self._key(key), target / safe_key(_relative(key, checked))) for key in keys]
        for _full, dest in downloads:
            dest.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors(_join_uri(self.root_uri, checked)), self._transfer() as manager:
            futures = [manager.download(self.bucket, full, str(dest)) for full, dest in downloads]
            for future in futures:
                future.result()
        return target

    def _iter_keys(self, list_prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
            for item in page.get("Contents", ()):
                yield item["Key"]

    def list(self, prefix: str = "") -> builtins.list[str]:
        list_prefix = self._list_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        with _s3_errors(_join_uri(self.root_uri, _prefix(prefix))):
            # Keys ending in '/' are directory markers (pyarrow's create_dir, consoles), not objects.
            keys = [key[strip:] for key in self._iter_keys(list_prefix) if not key.endswith("/")]
        return sorted(keys)

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            with _s3_errors(self.uri_for(key)):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        checked = _nonempty_prefix(prefix)
        uri = _join_uri(self.root_uri, checked)
        count = 0
        with _s3_errors(uri):
            keys = builtins.list(self._iter_keys(self._list_prefix(checked)))
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = keys[start : start + 1000]
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
                errors = response.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"deleting under {uri}: {len(errors)} failed, e.g. {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                    )
                count += sum(1 for key in batch if not key.endswith("/"))
        return count

    def _configured_endpoint(self) -> str | None:
        """The endpoint boto3 resolved, when it is not the default AWS one (MinIO, moto, a proxy)."""
        from botocore.config import Config

        endpoint = str(self.client.meta.endpoint_url)
        # Ask boto3 what it would pick without AWS_ENDPOINT_URL* / config-file endpoints, rather than
        # re-reading those settings here: a different answer means an endpoint was configured.
        region = self.client.meta.region_name
        with self._lock:  # a boto3 Session is not safe for making clients from several threads
            default = self._session.client(
                "s3", region_name=region, config=Config(ignore_configured_endpoint_urls=True)
            ).meta.endpoint_url
        return None if endpoint == default else endpoint

    def pyarrow_filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A pyarrow S3FileSystem reaching the same endpoint, region and credentials as the boto3 client."""
        import pyarrow.fs
        from botocore.credentials import RefreshableCredentials

        client = self.client
        kwargs: dict[str, Any] = {
            "region": client.meta.region_name,
            "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=self.options.max_attempts),
            "connect_timeout": self.options.connect_timeout,
            "request_timeout": self.options.read_timeout,
        }
        endpoint = self._configured_endpoint()
        if endpoint:
            parts = urlsplit(endpoint)
            kwargs["endpoint_override"] = parts.netloc
            kwargs["scheme"] = parts.scheme or "https"
        credentials = self._session.get_credentials()
        # Static keys (environment, credentials file) are handed over as they are. Refreshable ones
        # (instance/container roles, assume-role, SSO) would expire inside a long run if frozen
        # here, so pyarrow resolves them itself through the AWS SDK's chain, which refreshes them.
        if credentials is not None and not isinstance(credentials, RefreshableCredentials):
            frozen = credentials.get_frozen_credentials()
            kwargs["access_key"] = frozen.access_key
            kwargs["secret_key"] = frozen.secret_key
            if frozen.token:
                kwargs["session_token"] = frozen.token
        return pyarrow.fs.S3FileSystem(**kwargs)

    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        # pyarrow paths are "bucket/key" without a scheme.
        path = self._list_prefix(prefix).removesuffix("/")
        return f"{self.bucket}/{path}" if path else self.bucket, self.pyarrow_filesystem()


# ------------------------------------------------------------------------------------------ opening


def _parse_uri(uri: str) -> tuple[Literal["s3"], str, str] | tuple[Literal["file"], str, None]:
    """Split a URI into ("s3", bucket, key) or ("file", absolute path, None)."""
    if any(unicodedata.category(c) == "Cc" for c in uri):
        raise InvalidURI(f"control character in URI {uri!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if parts.query or parts.fragment:
            raise InvalidURI(f"s3 URIs take no query or fragment: {uri!r}")
        return "s3", parts.netloc, parts.path.removeprefix("/")
    if scheme == "file":
        if parts.netloc in ("", "localhost"):
            path = parts.path
        elif parts.netloc in (".", ".."):
            # file://./relative: not standard, but it is the embedded default; relative to the cwd.
            path = parts.netloc + parts.path
        else:
            raise InvalidURI(f"file URIs on another host are not supported: {uri!r}")
        if not path:
            raise InvalidURI(f"file URI without a path: {uri!r}")
        return "file", os.path.abspath(path), None
    # No scheme, or a one-letter one (a Windows drive): a local path.
    if scheme == "" or len(scheme) == 1:
        return "file", os.path.abspath(uri), None
    raise InvalidURI(f"unsupported storage URI {uri!r}: use s3://bucket/prefix, file:///path or a path")


def open_store(uri: str, *, options: S3Options | None = None) -> ObjectStore:
    """Open the store rooted at ``uri``: ``s3://bucket[/prefix]``, ``file:///path`` or a local path.

    Nothing is contacted or created until the first operation.
    """
    parsed = _parse_uri(uri)
    if parsed[0] == "s3":
        try:
            return S3Store(parsed[1], parsed[2], options=options)
        except InvalidKey as exc:
            raise InvalidURI(f"invalid storage URI {uri!r}: {exc}") from exc
    return LocalStore(parsed[1])


def read_uri(uri: str, *, options: S3Options | None = None) -> bytes:
    """Read one object or file: ``s3://bucket/key``, ``file:///path`` or a local path.

    Local paths are read as given; a server that takes URIs from users decides which it accepts.
    """
    parsed = _parse_uri(uri)
    if parsed[0] == "s3":
        if not parsed[2]:
            raise InvalidURI(f"no key in {uri!r}")
        store = S3Store(parsed[1], options=options) if options else _shared_s3_store(parsed[1], _aws_env())
        return store.get_bytes(parsed[2])
    with _local_errors(uri):
        return Path(parsed[1]).read_bytes()


_AWS_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def _aws_env() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _AWS_ENV)


@functools.lru_cache(maxsize=32)
def _shared_s3_store(bucket: str, env: tuple[str | None, ...]) -> S3Store:
    # Making a boto3 client costs far more than a small GET; read_uri is called on every job
    # submission (model config, dataset), so reuse one store per bucket. The environment is part
    # of the key: a changed endpoint or identity gets a new client. boto3 clients are thread-safe.
    return S3Store(bucket)


def download_uri_dir(uri: str, local_dir: str | Path, *, options: S3Options | None = None) -> Path:
    """Copy the "directory" at ``uri`` (e.g. a save_pretrained model dir) into ``local_dir``; return it."""
    return open_store(uri, options=options).download_dir("", local_dir)
