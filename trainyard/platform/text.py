"""Text that the platform refuses to store or pass on: a NUL character (Postgres cannot hold one in
text or JSONB) and an unpaired surrogate (it has no UTF-8 encoding). Both are refused where text
enters, naming where it was, so that nothing deeper down fails on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NUL = "holds a NUL character (\\u0000)"
SURROGATE = "holds an unpaired surrogate (not encodable as UTF-8)"


def text_problem(value: str) -> str | None:
    """What is wrong with `value` (`NUL` or `SURROGATE`), or None when it may be stored."""
    if "\x00" in value:
        return NUL
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None


def find_bad_text(value: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """The first string in a decoded JSON value (keys included) that `text_problem` refuses: its
    path (a key's path is that of the object holding it) and the problem, else None."""
    if isinstance(value, str):
        problem = text_problem(value)
        return (path, problem) if problem else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)):
                return path, f"has a key that {problem}"
            found = find_bad_text(item, (*path, key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = find_bad_text(item, (*path, i))
            if found:
                return found
    return None


def dotted(path: tuple[str | int, ...]) -> str | None:
    """A path as an error's `param` names it: `metadata.team`, `messages.0.content`."""
    return ".".join(str(p) for p in path) or None
