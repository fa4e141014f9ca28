"""A pyarrow S3 filesystem that keeps its retry strategy when pickled.

Ray Train pickles the `storage_filesystem` it is given to its controller and every worker, and
pyarrow's `S3FileSystem.__reduce__` leaves the retry strategy out: the copies fall back to
pyarrow's default of 3 attempts (about 1.4 s against a store that refuses connections), so a
blip of a few seconds during a checkpoint upload failed the run. This subclass rebuilds itself
with the same strategy on the other side (10 attempts last about 97 s against the same store).
Imported only where pyarrow is needed.
"""

from __future__ import annotations

from typing import Any

import pyarrow.fs


def _rebuild(max_attempts: int, kwargs: dict[str, Any]) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(max_attempts=max_attempts, **kwargs)


class RetryingS3FileSystem(pyarrow.fs.S3FileSystem):
    def __init__(self, *, max_attempts: int, **kwargs: Any) -> None:
        super().__init__(
            retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=max_attempts), **kwargs
        )
        self._max_attempts = max_attempts
        self._kwargs = kwargs

    def __reduce__(self) -> tuple[Any, tuple[int, dict[str, Any]]]:
        return _rebuild, (self._max_attempts, self._kwargs)
