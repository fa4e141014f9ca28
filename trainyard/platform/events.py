"""Job events: the one place an event is written, so its type and level are checked once.

An event is a row a user reads as the job's history: status changes, metrics, checkpoints,
costs and messages. The database refuses any other type (CHECK constraint, migration 0003).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from trainyard.platform.models import JobEvent

STATUS: Final = "status"
METRICS: Final = "metrics"
CHECKPOINT: Final = "checkpoint"
COST: Final = "cost"
MESSAGE: Final = "message"
TYPES: frozenset[str] = frozenset({STATUS, METRICS, CHECKPOINT, COST, MESSAGE})
LEVELS: frozenset[str] = frozenset({"debug", "info", "warning", "error"})
MAX_MESSAGE_CHARS = 4000


def add(
    session: Session,
    job_id: str,
    type: str,
    message: str,
    *,
    attempt_id: str | None = None,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Add an event to the session (the caller commits, with the change it records)."""
    from trainyard.platform.models import JobEvent  # models declares its CHECK from TYPES

    if type not in TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event = JobEvent(
        job_id=job_id,
        attempt_id=attempt_id,
        type=type,
        level=level if level in LEVELS else "info",
        message=message[:MAX_MESSAGE_CHARS],
        data=data or {},
    )
    session.add(event)
    return event
