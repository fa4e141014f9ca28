"""The key rules: what a key or a prefix may be, checked on every call of every store.

Keys are relative to the store's root and use ``/`` as the separator; a key built from user input
can never step outside the root. "Directories" are prefixes, so ``jobs/j1`` never matches
``jobs/j10/...``.
"""

from __future__ import annotations

import unicodedata

from trainyard.platform.storage.errors import InvalidKey

__all__ = [
    "MAX_KEY_BYTES",
    "TMP_PREFIX",
    "check_prefix",
    "has_control_character",
    "join_uri",
    "nonempty_prefix",
    "relative_key",
    "safe_key",
]

# S3's limit on a key, in UTF-8 bytes; the file store keeps the same limit so both accept the same keys.
MAX_KEY_BYTES = 1024
# Temporary files of atomic local writes start with this; list() skips them and safe_key refuses
# keys that use it, so a crash's leftovers never show up as objects.
TMP_PREFIX = ".trainyard-tmp-"


def _check_segment(segment: str, key: str) -> None:
    if segment == "":
        raise InvalidKey(f"empty path segment in key {key!r}")
    if segment in (".", ".."):
        raise InvalidKey(f"'.' and '..' are not allowed in key {key!r}")
    if "\\" in segment:
        raise InvalidKey(f"backslash in key {key!r}")
    # Newlines and NULs in keys break logs, local filenames and signatures alike.
    if has_control_character(segment):
        raise InvalidKey(f"control character in key {key!r}")
    if segment.startswith(TMP_PREFIX):
        raise InvalidKey(f"key segments must not start with {TMP_PREFIX!r}: {key!r}")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control character or DEL (Unicode category Cc)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def safe_key(*parts: str) -> str:
    """Join key parts with ``/`` after checking each; raise InvalidKey if any part is unsafe.

    A part may itself contain ``/`` (``"checkpoints/step_1"``); every segment must be non-empty and
    must not be ``.`` or ``..``, contain a backslash or a control character. Absolute parts are refused.
    """
    if not parts:
        raise InvalidKey("a key needs at least one part")
    segments: list[str] = []
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


def check_prefix(prefix: str) -> str:
    """Validate a prefix: like a key, but ``""`` (the root) and one trailing ``/`` are allowed."""
    if prefix in ("", "/"):
        return ""
    return safe_key(prefix.removesuffix("/"))


def nonempty_prefix(prefix: str) -> str:
    """A prefix for ``delete_prefix``: the root is refused."""
    checked = check_prefix(prefix)
    if not checked:
        # Deleting the whole store by passing "" by mistake is too easy; callers name what they delete.
        raise InvalidKey("delete_prefix needs a non-empty prefix")
    return checked


def join_uri(root_uri: str, key: str) -> str:
    """``root_uri/key``; the root itself for the empty key."""
    if not key:
        return root_uri
    return root_uri + key if root_uri.endswith("/") else f"{root_uri}/{key}"


def relative_key(key: str, prefix: str) -> str:
    """``key`` with the checked ``prefix`` and its ``/`` taken off the front."""
    return key[len(prefix) + 1 :] if prefix else key
