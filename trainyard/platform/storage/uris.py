"""Storage URIs: what one may be, and the functions that open or read what one names.

``s3://bucket[/prefix]``, ``file:///abs/path``, ``file://./relative`` (the embedded default) or a plain
local path. Nothing is contacted or created until the first operation on what they return.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from trainyard.platform.storage.base import ObjectStore
from trainyard.platform.storage.errors import InvalidKey, InvalidURI
from trainyard.platform.storage.keys import has_control_character
from trainyard.platform.storage.local import LocalStore, file_size, local_errors, read_file_prefix
from trainyard.platform.storage.s3 import S3Options, S3Store, shared_store

__all__ = ["download_uri_dir", "open_store", "parse_uri", "read_uri", "read_uri_prefix", "uri_size"]


def parse_uri(uri: str) -> tuple[Literal["s3"], str, str] | tuple[Literal["file"], str, None]:
    """Split a URI into ("s3", bucket, key) or ("file", absolute path, None)."""
    if has_control_character(uri):
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
    parsed = parse_uri(uri)
    if parsed[0] == "s3":
        try:
            return S3Store(parsed[1], parsed[2], options=options)
        except InvalidKey as exc:
            raise InvalidURI(f"invalid storage URI {uri!r}: {exc}") from exc
    return LocalStore(parsed[1])


def _s3_object(uri: str, bucket: str, key: str, options: S3Options | None) -> tuple[S3Store, str]:
    if not key:
        raise InvalidURI(f"no key in {uri!r}")
    return (S3Store(bucket, options=options) if options else shared_store(bucket)), key


def read_uri(uri: str, *, options: S3Options | None = None) -> bytes:
    """Read one object or file: ``s3://bucket/key``, ``file:///path`` or a local path.

    Local paths are read as given; a server that takes URIs from users decides which it accepts.
    """
    parsed = parse_uri(uri)
    if parsed[0] == "s3":
        store, key = _s3_object(uri, parsed[1], parsed[2], options)
        return store.get_bytes(key)
    with local_errors(uri):
        return Path(parsed[1]).read_bytes()


def uri_size(uri: str, *, options: S3Options | None = None) -> int:
    """The size in bytes of one object or file, by HEAD or stat: nothing of it is read.

    ObjectNotFound when there is none (a directory, or a bucket without a key, is none).
    """
    parsed = parse_uri(uri)
    if parsed[0] == "s3":
        store, key = _s3_object(uri, parsed[1], parsed[2], options)
        return store.size(key)
    with local_errors(uri):
        return file_size(Path(parsed[1]))


def read_uri_prefix(uri: str, max_bytes: int, *, options: S3Options | None = None) -> bytes:
    """The first ``max_bytes`` bytes of one object or file (a ranged GET, or a bounded read)."""
    parsed = parse_uri(uri)
    if parsed[0] == "s3":
        store, key = _s3_object(uri, parsed[1], parsed[2], options)
        return store.read_prefix(key, max_bytes)
    with local_errors(uri):
        return read_file_prefix(Path(parsed[1]), max_bytes)


def download_uri_dir(uri: str, local_dir: str | Path, *, options: S3Options | None = None) -> Path:
    """Copy the "directory" at ``uri`` (e.g. a save_pretrained model dir) into ``local_dir``; return it."""
    return open_store(uri, options=options).download_dir("", local_dir)
