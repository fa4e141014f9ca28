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
from trainyard.platform.storage.local import LocalStore, local_errors
from trainyard.platform.storage.s3 import S3Options, S3Store, shared_store

__all__ = ["download_uri_dir", "open_store", "parse_uri", "read_uri"]


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


def read_uri(uri: str, *, options: S3Options | None = None) -> bytes:
    """Read one object or file: ``s3://bucket/key``, ``file:///path`` or a local path.

    Local paths are read as given; a server that takes URIs from users decides which it accepts.
    """
    parsed = parse_uri(uri)
    if parsed[0] == "s3":
        if not parsed[2]:
            raise InvalidURI(f"no key in {uri!r}")
        store = S3Store(parsed[1], options=options) if options else shared_store(parsed[1])
        return store.get_bytes(parsed[2])
    with local_errors(uri):
        return Path(parsed[1]).read_bytes()


def download_uri_dir(uri: str, local_dir: str | Path, *, options: S3Options | None = None) -> Path:
    """Copy the "directory" at ``uri`` (e.g. a save_pretrained model dir) into ``local_dir``; return it."""
    return open_store(uri, options=options).download_dir("", local_dir)
