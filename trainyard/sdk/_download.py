"""Writing what the API streams to local files: whole or not at all, never outside the target."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath

__all__ = ["local_target", "write_async", "write_sync"]


def local_target(root: Path, relative: str) -> Path:
    """`root / relative` for a path the server named; refuses one that would land outside `root`
    (absolute, `..`, a drive), whatever the server says."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"refusing to write {relative!r} outside {root}")
    if any("\\" in p or ":" in p or "\x00" in p for p in parts):
        raise ValueError(f"refusing to write {relative!r}: not a plain relative path")
    return root.joinpath(*parts)


def _part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")


def write_sync(chunks: Iterator[bytes], dest: Path) -> int:
    """Write `chunks` to `dest` through a temporary file renamed into place; returns the bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    written = 0
    try:
        with part.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return written


async def write_async(chunks: AsyncIterator[bytes], dest: Path) -> int:
    """As `write_sync`, from an async stream (the local writes are small and stay blocking)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    written = 0
    try:
        with part.open("wb") as f:
            async for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return written
