"""The job state machine, enforced here and only here.

    queued ──claim──> running ──> succeeded
      │                 │  ├────> failed      (user error, or attempts exhausted)
      │                 │  ├────> queued      (retry after backoff, lease rescue, graceful hand-back)
      │                 │  └────> cancelling ──> cancelled (the worker saw the flag, or its lease ran out)
      ├──> cancelled    │                    └─> succeeded | failed (finished before it saw the flag)
      └──> failed       └────> cancelled
      (queued -> failed: the scheduler found no feasible instance)

    queued | running ──pause──> paused ──resume──> queued      paused ──> cancelled
      (a running job pauses once its worker has checkpointed and handed it back)

Every transition writes a `status` event in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from trainyard.platform.errors import Conflict
from trainyard.platform.models import Job, JobEvent

QUEUED = "queued"
RUNNING = "running"
CANCELLING = "cancelling"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"

STATUSES = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED, PAUSED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({RUNNING, CANCELLING})

ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED, PAUSED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, QUEUED, CANCELLING, CANCELLED, PAUSED}),
    PAUSED: frozenset({QUEUED, CANCELLED}),
    CANCELLING: frozenset({CANCELLED, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def can_transition(src: str, dst: str) -> bool:
    return dst in ALLOWED.get(src, frozenset())


def transition(
    session: Session,
    job: Job,
    dst: str,
    *,
    message: str,
    attempt_id: str | None = None,
    data: dict[str, Any] | None = None,
    level: str = "info",
) -> None:
    """Move `job` to `dst` (the caller holds the row lock) and record the event."""
    src = job.status
    if not can_transition(src, dst):
        raise Conflict(f"job {job.id} cannot go from {src} to {dst}", code="invalid_state")
    now = utcnow()
    job.status = dst
    job.updated_at = now
    if dst == RUNNING and job.started_at is None:
        job.started_at = now
    if dst in TERMINAL:
        job.finished_at = now
    session.add(
        JobEvent(
            job_id=job.id,
            attempt_id=attempt_id,
            type="status",
            level=level,
            message=message,
            data={"from": src, "to": dst, **(data or {})},
        )
    )
