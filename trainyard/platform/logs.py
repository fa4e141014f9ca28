"""An attempt's log: its process output — the attempt's own lines and its Ray workers' training
output — kept in the job's store as it is written.

The worker appends the attempt's output to a local file and ships what is new every few seconds
as one more segment, ``jobs/{id}/attempts/{n}/logs/{offset:012d}.log``, named by the byte offset
it starts at. Objects cannot be appended to, and a segment per shipment keeps each upload small
while the log grows; readers concatenate segments in offset order. A byte offset is also the
cursor a follower passes back (``after``), so following a log is polling with the last
``next_offset``, like paging events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.platform import db, jobs
from trainyard.platform.auth import Principal
from trainyard.platform.errors import InvalidRequest, NotFound
from trainyard.platform.models import JobAttempt
from trainyard.platform.storage import ObjectStore, logs_prefix, safe_key

MAX_READ_BYTES = 1024 * 1024  # one answer; a follower asks again from `next_offset`
SEGMENT_DIGITS = 12
END = "end.json"  # written after the last segment: the log's final length


def segment_key(job_id: str, attempt: int, offset: int) -> str:
    return safe_key(logs_prefix(job_id, attempt), f"{offset:0{SEGMENT_DIGITS}d}.log")


def end_key(job_id: str, attempt: int) -> str:
    return safe_key(logs_prefix(job_id, attempt), END)


def _final_length(store: ObjectStore, job_id: str, attempt: int, keys: list[str]) -> int | None:
    key = end_key(job_id, attempt)
    if key not in keys:
        return None
    return int(json.loads(store.get_bytes(key))["bytes"])


@dataclass(frozen=True)
class LogChunk:
    attempt: int
    offset: int  # where `text` starts in the attempt's log
    next_offset: int  # pass as `after` to read on
    text: str
    length: int | None = None  # the whole log's, once its attempt ended and all of it is shipped

    @property
    def complete(self) -> bool:
        """Read to the end of a log that will not grow any more."""
        return self.length is not None and self.next_offset >= self.length


@dataclass(frozen=True)
class JobLog:
    job_id: str
    job_status: str
    attempts: int  # how many the job has had; the log is of `chunk.attempt`
    chunk: LogChunk


def job_log(
    session: Session,
    principal: Principal,
    store: ObjectStore,
    job_id: str,
    *,
    attempt: int | None = None,
    after: int = 0,
    tail: int | None = None,
) -> JobLog:
    """The log of one of the job's attempts (default: its latest), as the job's team sees it."""
    if after < 0:
        raise InvalidRequest("after must be a byte offset, 0 or more", code="invalid_after", param="after")
    if tail is not None and tail < 0:
        raise InvalidRequest("tail must be a number of lines, 0 or more", code="invalid_tail", param="tail")
    job = jobs.get_job(session, principal, job_id)
    number = job.attempt_count if attempt is None else attempt
    row = session.scalar(select(JobAttempt).where(JobAttempt.job_id == job.id, JobAttempt.number == number))
    if row is None:
        if attempt is None:  # queued, never started: an empty log, not an error
            return JobLog(job.id, job.status, job.attempt_count, LogChunk(0, 0, 0, ""))
        raise NotFound(f"job {job_id!r} has no attempt {attempt}", code="attempt_not_found", param="attempt")
    db.release(session)  # the store is read with no transaction open
    chunk = read_log(store, job.id, number, after=after, tail=tail)
    return JobLog(job.id, job.status, job.attempt_count, chunk)


def _segments(keys: list[str]) -> list[tuple[int, str]]:
    found = []
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        stem = name.removesuffix(".log")
        if stem.isdigit() and len(stem) == SEGMENT_DIGITS:
            found.append((int(stem), key))
    return sorted(found)


def read_log(
    store: ObjectStore,
    job_id: str,
    attempt: int,
    *,
    after: int = 0,
    tail: int | None = None,
    max_bytes: int = MAX_READ_BYTES,
) -> LogChunk:
    """The attempt's log from byte ``after`` on (at most ``max_bytes`` of it), or, with ``tail``,
    its last ``tail`` lines. Bytes are decoded as UTF-8 with replacement: a log is for reading."""
    keys = store.list(logs_prefix(job_id, attempt))
    length = _final_length(store, job_id, attempt, keys)
    segments = _segments(keys)
    if tail is not None:
        return _tail(store, attempt, segments, tail, max_bytes, length)
    parts: list[bytes] = []
    start = after
    end = after
    for offset, key in segments:
        if end - start >= max_bytes:
            break
        data = store.get_bytes(key)
        if offset + len(data) <= end:
            continue
        if offset > end:
            break  # a segment not shipped yet: stop at the gap, the follower asks again
        piece = data[end - offset :]
        piece = piece[: max_bytes - (end - start)]
        parts.append(piece)
        end += len(piece)
    return LogChunk(attempt, start, end, b"".join(parts).decode("utf-8", errors="replace"), length)


def _tail(
    store: ObjectStore,
    attempt: int,
    segments: list[tuple[int, str]],
    lines: int,
    max_bytes: int,
    length: int | None,
) -> LogChunk:
    collected = b""
    start = end = 0
    for offset, key in reversed(segments):
        data = store.get_bytes(key)
        if not collected:
            end = offset + len(data)
        collected = data + collected
        start = offset
        # One more newline than lines wanted: the text before it is cut off.
        if collected.count(b"\n") > lines or len(collected) >= max_bytes:
            break
    if lines <= 0:
        return LogChunk(attempt, end, end, "", length)
    body = collected[-max_bytes:]
    start = end - len(body)
    kept = body.split(b"\n")
    trailing = body.endswith(b"\n")
    wanted = lines + 1 if trailing else lines
    if len(kept) > wanted:
        dropped = b"\n".join(kept[:-wanted]) + b"\n"
        start += len(dropped)
        body = body[len(dropped) :]
    return LogChunk(attempt, start, end, body.decode("utf-8", errors="replace"), length)
