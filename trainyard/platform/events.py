"""Job events: the one place an event is written, so its type and level are checked once.

An event is a row a user reads as the job's history: status changes, metrics, checkpoints,
costs and messages. The database refuses any other type (CHECK constraint, migration 0003).
`add` writes one through the session; `insert_sql` is its SQL form, for a statement that writes
the change an event records and the event at once (the queue's claim and an attempt's end).
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

    type, level = _checked(type, level)
    event = JobEvent(
        job_id=job_id,
        attempt_id=attempt_id,
        type=type,
        level=level,
        message=message[:MAX_MESSAGE_CHARS],
        data=data or {},
    )
    session.add(event)
    return event


def insert_sql(
    source: str, *, type: str, job_id: str, attempt_id: str, message: str, data: str, level: str = "info"
) -> str:
    """`add` in SQL: `INSERT INTO job_events ... SELECT` one event per row of `source` (a table or
    CTE name, with an alias if the expressions need one), for a CTE of the statement that writes
    the change the event records. `job_id`, `attempt_id`, `message` and `data` (jsonb) are SQL
    expressions over `source` and bound parameters, never text from a caller."""
    type, level = _checked(type, level)
    return (
        "INSERT INTO job_events (job_id, attempt_id, type, level, message, data) "
        f"SELECT {job_id}, {attempt_id}, '{type}', '{level}', left({message}, {MAX_MESSAGE_CHARS}), "
        f"COALESCE({data}, '{{}}'::jsonb) FROM {source}"
    )


def _checked(type: str, level: str) -> tuple[str, str]:
    """The type, refused unless it is one of TYPES; the level, `info` unless one of LEVELS."""
    if type not in TYPES:
        raise ValueError(f"unknown event type {type!r}")
    return type, level if level in LEVELS else "info"
