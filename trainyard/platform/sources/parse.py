"""The one parser of job sources: every spelling a caller may send becomes one typed `Source`,
or is refused, before anything is read.

Accepted spellings, and nothing else:

* ``s3://bucket[/key]``: a bucket name as S3 spells it (lower case), a key without empty, ``.``
  or ``..`` segments (one trailing ``/`` allowed, for a "directory");
* ``file:///absolute/path`` and a plain absolute path ``/absolute/path``: a local path, with the
  same segment rules;
* ``name`` or ``org/name``, optionally ``@revision``: a model hub id (base models only).

The scheme's case is normalised (``S3://``, ``FILE://`` are ``s3://``, ``file://``); everything
else that could be read two ways is refused rather than guessed at: surrounding whitespace,
control and invisible characters, percent-encoding, queries and fragments, backslashes, relative
paths (``x/../..``, ``a:../b``, ``file:relative``, ``file:/one-slash``, ``file://host/...``),
Windows drive letters and other schemes. Each `Source` carries its canonical spelling (`uri`),
which is what the job keeps, so every later reader sees the one spelling that was checked.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from trainyard.platform.errors import InvalidRequest

__all__ = [
    "SOURCE_FIELDS",
    "Source",
    "SourceKind",
    "SourceRefused",
    "is_local_path",
    "join_key",
    "parse_source",
    "under",
]

SOURCE_FIELDS = ("base_model", "training_file", "validation_file")
MAX_SEGMENT_BYTES = 255  # the longest file name Linux (and most file systems) allow
MAX_PATH_BYTES = 4095

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# S3's rules for bucket names (MinIO's are the same): 3-63 of a-z 0-9 . -, alphanumeric at both ends.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}(?:@([A-Za-z0-9][A-Za-z0-9._/-]{{0,99}}))?$")
# Control, format (bidirectional overrides, zero-width), surrogate, private-use and line/paragraph
# separator characters: none belongs in a URI, and several make one look like another.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


class SourceKind(StrEnum):
    STORE = "store"  # under the platform's own store root (a `key` relative to it)
    S3 = "s3"
    LOCAL = "local"
    HUB = "hub"


class SourceRefused(InvalidRequest):
    """A source the caller may not use, or one that does not parse: refused before any read."""

    code = "source_not_allowed"


@dataclass(frozen=True)
class Source:
    """A parsed source. `uri` is its canonical spelling; `bucket` and `key` are set for S3 (and for
    the store, `key` then relative to its root); `path` for a local path; `revision` for a hub id."""

    kind: SourceKind
    uri: str
    bucket: str | None = None
    key: str | None = None
    path: str | None = None
    revision: str | None = None


def _refuse(param: str, value: str, why: str) -> SourceRefused:
    shown = value if len(value) <= 200 else value[:200] + "..."
    return SourceRefused(f"{param} {shown!r} is not accepted: {why}", param=param)


def _check_text(value: str, param: str) -> None:
    if not value:
        raise _refuse(param, value, "it is empty")
    if value != value.strip():
        raise _refuse(param, value, "it starts or ends with whitespace")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
        raise _refuse(param, value, "it holds a control or invisible character")
    if "%" in value:
        raise _refuse(param, value, "percent-encoding is not accepted; write the characters themselves")
    if "\\" in value:
        raise _refuse(param, value, "backslashes are not accepted; use '/'")
    if "?" in value or "#" in value:
        raise _refuse(param, value, "queries and fragments ('?', '#') are not accepted")


def _segments(text: str, value: str, param: str) -> list[str]:
    """The '/'-separated segments of a key or an absolute path's tail; one trailing '/' is allowed."""
    parts = text.removesuffix("/").split("/") if text else []
    for part in parts:
        if part in ("", ".", ".."):
            raise _refuse(param, value, "empty, '.' and '..' path segments are not accepted")
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _refuse(param, value, f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return parts


def _s3(rest: str, value: str, param: str) -> Source:
    if not rest.startswith("//"):
        raise _refuse(param, value, "write s3://bucket/key")
    bucket, _, key = rest[2:].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise _refuse(param, value, f"{bucket!r} is not an S3 bucket name")
    parts = _segments(key, value, param)
    key = "/".join(parts)
    return Source(SourceKind.S3, join_key(f"s3://{bucket}", key), bucket=bucket, key=key)


def _local(path: str, value: str, param: str) -> Source:
    if not path.startswith("/") or path.startswith("//"):
        raise _refuse(param, value, "a local path must be absolute (file:///path or /path)")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise _refuse(param, value, f"the path is longer than {MAX_PATH_BYTES} bytes")
    parts = _segments(path[1:], value, param)
    clean = "/" + "/".join(parts)
    return Source(SourceKind.LOCAL, "file://" + clean, path=clean)


def parse_source(value: str, param: str = "base_model") -> Source:
    """Parse one source value (`param` names the field, for the error); raise SourceRefused."""
    if not isinstance(value, str):
        raise SourceRefused(f"{param} must be a string", param=param)
    _check_text(value, param)
    scheme = _SCHEME.match(value)
    if scheme is not None:
        name, rest = scheme.group(1).lower(), value[scheme.end() :]
        if name == "s3":
            return _s3(rest, value, param)
        if name == "file":
            if not rest.startswith("///"):
                raise _refuse(param, value, "write file:///absolute/path (three slashes, no host)")
            return _local(rest[2:], value, param)
        if len(name) == 1:
            raise _refuse(param, value, "Windows paths are not accepted")
        raise _refuse(param, value, f"the {name!r} scheme is not supported; use s3://, file:/// or a hub id")
    if value.startswith("/"):
        return _local(value, value, param)
    hub = _HUB_ID.match(value)
    if hub is not None and ".." not in value and "--" not in value and param == "base_model":
        return Source(SourceKind.HUB, value, revision=hub.group(1))
    if param == "base_model":
        why = "use a hub id (org/name), s3://bucket/key, or an absolute local path"
    else:
        why = "use an uploaded file id (file-...), s3://bucket/key, or an absolute local path"
    raise _refuse(param, value, why)


def join_key(root: str, key: str) -> str:
    """``root/key``; the root itself for the empty key."""
    if not key:
        return root
    return f"{root.removesuffix('/')}/{key}"


def under(key: str, prefix: str) -> bool:
    """Whether `key` is `prefix` or below it, by whole segments ('' is the root, above all)."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


def is_local_path(value: str) -> bool:
    """Whether `value` names something on a machine's own disk rather than a store or the hub."""
    scheme = _SCHEME.match(value.strip())
    if scheme is not None:
        return scheme.group(1).lower() == "file" or len(scheme.group(1)) == 1
    return _HUB_ID.match(value) is None
