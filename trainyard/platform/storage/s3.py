"""``S3Store``: the store in an S3 (or S3-compatible) bucket, through boto3.

Endpoint, region and credentials come from boto3's own resolution (AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL, AWS_* variables, ~/.aws files, instance roles); nothing here re-reads them.
boto3 and pyarrow are imported on first use so that importing the package stays cheap.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trainyard.platform.storage.base import ObjectStore, local_files
from trainyard.platform.storage.errors import InvalidURI, ObjectNotFound, StorageError
from trainyard.platform.storage.keys import (
    check_prefix,
    has_control_character,
    join_uri,
    nonempty_prefix,
    relative_key,
    safe_key,
)
from trainyard.platform.storage.transfers import KnownObject, S3Options

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["S3Options", "S3Store", "shared_store"]


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
        if not bucket or "/" in bucket or has_control_character(bucket):
            raise InvalidURI(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self.options = options or S3Options()
        self.root_uri = join_uri(f"s3://{bucket}", self.prefix)
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
        checked = check_prefix(prefix)
        full = "/".join(p for p in (self.prefix, checked) if p)
        return f"{full}/" if full else ""

    def _transfer(self, total_bytes: int | None = None) -> Any:
        """A transfer manager with parts sized for moving `total_bytes` (see `S3Options.part_size`)."""
        from boto3.s3.transfer import create_transfer_manager

        return create_transfer_manager(self.client, self.options.transfer_config(total_bytes))

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        full = self._key(key)
        uri = self.uri_for(key)
        extra = {"ContentType": content_type} if content_type else {}
        with _s3_errors(uri):
            if len(data) < self.options.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
            else:
                with self._transfer(len(data)) as manager:
                    manager.upload(io.BytesIO(data), self.bucket, full, extra_args=extra or None).result()
        return uri

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with _s3_errors(self.uri_for(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())

    def size(self, key: str) -> int:
        full = self._key(key)
        with _s3_errors(self.uri_for(key)):
            return int(self.client.head_object(Bucket=self.bucket, Key=full)["ContentLength"])

    def read_prefix(self, key: str, max_bytes: int) -> bytes:
        from botocore.exceptions import ClientError

        full = self._key(key)
        if max_bytes < 1:
            self.size(key)  # still ObjectNotFound for a missing object
            return b""
        with _s3_errors(self.uri_for(key)):
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=full, Range=f"bytes=0-{max_bytes - 1}"
                )
            except ClientError as exc:
                # An empty object has no byte 0 to start a range at.
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""
                raise
            # read(max_bytes) and closing the body bound the read even against a server that ignores
            # Range and sends the whole object.
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read(max_bytes))

    def put_file(self, key: str, path: str | Path) -> str:
        full = self._key(key)
        uri = self.uri_for(key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        with _s3_errors(uri), self._transfer(source.stat().st_size) as manager:
            manager.upload(str(source), self.bucket, full).result()
        return uri

    def get_file(self, key: str, path: str | Path) -> None:
        full = self._key(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors(self.uri_for(key)):
            # The HEAD the transfer manager would make, made here to size the parts by the object.
            head = self.client.head_object(Bucket=self.bucket, Key=full)
            known = KnownObject(int(head["ContentLength"]), head.get("ETag"))
            # s3transfer writes to a temporary name next to the target and renames it when complete.
            with self._transfer(known.size) as manager:
                manager.download(self.bucket, full, str(target), subscribers=[known]).result()

    def upload_dir(self, prefix: str, local_dir: str | Path) -> str:
        checked = check_prefix(prefix)
        uploads = [
            (self._key(safe_key(checked, relative) if checked else relative), source)
            for relative, source in local_files(Path(local_dir))
        ]
        uri = join_uri(self.root_uri, checked)
        total = sum(source.stat().st_size for _key, source in uploads)
        # One transfer manager for all files: small files go up in parallel, large ones in parts
        # sized so that the whole directory moves in about one round, under one concurrency limit.
        # Leaving the block on an error cancels what is still queued.
        with _s3_errors(uri), self._transfer(total) as manager:
            futures = [manager.upload(str(source), self.bucket, key) for key, source in uploads]
            for future in futures:
                future.result()
        return uri

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        checked = check_prefix(prefix)
        uri = join_uri(self.root_uri, checked)
        strip = len(self.prefix) + 1 if self.prefix else 0
        with _s3_errors(uri):
            objects = sorted(
                (
                    (item["Key"][strip:], KnownObject(int(item["Size"]), item.get("ETag")))
                    for item in self._iter_objects(self._list_prefix(checked))
                    if not item["Key"].endswith("/")  # directory markers, as `list` skips them
                ),
                key=lambda pair: pair[0],
            )
        if not objects:
            raise ObjectNotFound(f"no objects under {uri}")
        target = Path(local_dir)
        # Re-check each relative key: objects written by others (a user's model dir) could carry
        # '..' segments that would otherwise land outside local_dir.
        downloads = [
            (self._key(key), target / safe_key(relative_key(key, checked)), known) for key, known in objects
        ]
        for _full, dest, _known in downloads:
            dest.parent.mkdir(parents=True, exist_ok=True)
        total = sum(known.size for _key, known in objects)
        # The listing gave every size and ETag: no HEAD per file.
        with _s3_errors(uri), self._transfer(total) as manager:
            futures = [
                manager.download(self.bucket, full, str(dest), subscribers=[known])
                for full, dest, known in downloads
            ]
            for future in futures:
                future.result()
        return target

    def _iter_objects(self, list_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
            yield from page.get("Contents", ())

    def _iter_keys(self, list_prefix: str) -> Iterator[str]:
        for item in self._iter_objects(list_prefix):
            yield item["Key"]

    def list(self, prefix: str = "") -> builtins.list[str]:
        list_prefix = self._list_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        with _s3_errors(join_uri(self.root_uri, check_prefix(prefix))):
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
        checked = nonempty_prefix(prefix)
        uri = join_uri(self.root_uri, checked)
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
        from botocore.credentials import RefreshableCredentials

        from trainyard.platform.storage.arrow import RetryingS3FileSystem

        client = self.client
        kwargs: dict[str, Any] = {
            "region": client.meta.region_name,
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
        # Its retry strategy survives the pickling that takes it to Ray Train's processes.
        return RetryingS3FileSystem(max_attempts=self.options.max_attempts, **kwargs)

    def ray_storage(self, prefix: str) -> tuple[str, pyarrow.fs.FileSystem]:
        # pyarrow paths are "bucket/key" without a scheme.
        path = self._list_prefix(prefix).removesuffix("/")
        return f"{self.bucket}/{path}" if path else self.bucket, self.pyarrow_filesystem()


_AWS_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def shared_store(bucket: str) -> S3Store:
    """One S3Store per bucket and AWS environment, with default options, reused across calls."""
    return _shared_store(bucket, tuple(os.environ.get(name) for name in _AWS_ENV))


@functools.lru_cache(maxsize=32)
def _shared_store(bucket: str, env: tuple[str | None, ...]) -> S3Store:
    # Making a boto3 client costs far more than a small GET; read_uri is called on every job
    # submission (model config, dataset), so reuse one store per bucket. The environment is part
    # of the key: a changed endpoint or identity gets a new client. boto3 clients are thread-safe.
    return S3Store(bucket)
