"""How ``S3Store`` moves large objects: its options, and part sizes fitted to the object.

boto3's default moves every object in 8 MiB parts. A checkpoint of a few hundred MB then goes in
dozens of requests, several rounds of ``max_concurrency`` at a time, each round waiting for its
slowest part; each request also costs signing, a connection turn and, on the server, a part to
store and stitch. Here a large object is cut into about ``max_concurrency`` parts, so all of them
move at once, in one round (never smaller than ``multipart_chunksize``, never larger than
``MAX_PART_SIZE``, so that a retried part stays cheap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from trainyard.platform.storage.base import MB

# A part that fails is sent again whole; above this, more parts cost less than a retry would.
MAX_PART_SIZE = 256 * MB

__all__ = ["MAX_PART_SIZE", "KnownObject", "S3Options"]


@dataclass(frozen=True)
class S3Options:
    """Transfer and retry settings for S3Store.

    Objects at or above ``multipart_threshold`` go up and down in parts of at least
    ``multipart_chunksize``, ``max_concurrency`` at a time; a larger object gets larger parts,
    about ``max_concurrency`` of them (see ``part_size``). Throttling (SlowDown, 503) and transient
    errors are retried by botocore and by pyarrow's S3 client; ``max_attempts`` counts every try,
    the first included, and ``retry_mode`` "adaptive" also rate-limits the client after throttling.
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

    def part_size(self, total_bytes: int | None) -> int:
        """The part size for moving ``total_bytes`` (one object, or all of a directory's files
        through one transfer manager): one round of ``max_concurrency`` parts, in whole MiB."""
        if total_bytes is None:
            return self.multipart_chunksize
        one_round = -(-total_bytes // self.max_concurrency)
        whole_mib = -(-one_round // MB) * MB
        return max(self.multipart_chunksize, min(whole_mib, MAX_PART_SIZE))

    def transfer_config(self, total_bytes: int | None = None) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.part_size(total_bytes),
            max_concurrency=self.max_concurrency,
            # The CRT transfer client ignores most of these settings and builds its own connection;
            # "classic" keeps the behaviour the same on every host.
            preferred_transfer_client="classic",
        )


class KnownObject:
    """An s3transfer subscriber that hands a download the size and ETag already known (from a
    HEAD or a listing), so the transfer manager does not ask for them again; the ETag still
    makes every ranged GET refuse an object replaced mid-download (IfMatch)."""

    def __init__(self, size: int, etag: str | None) -> None:
        self.size = size
        self.etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag is not None:
            future.meta.provide_object_etag(self.etag)
