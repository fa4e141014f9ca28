"""What the queue holds right now: waiting and running jobs by pool."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, case, extract, func, select
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.auth import Principal, visible_team_id
from trainyard.platform.models import Job


def queue_summary(session: Session, principal: Principal, team: str | None = None) -> dict[str, Any]:
    """Waiting and running jobs by pool, for the caller's view (admins: all teams or `team`)."""
    team_id = visible_team_id(session, principal, team)
    waiting = Job.status == states.QUEUED
    running = Job.status.in_(sorted(states.ACTIVE))
    accelerators = Job.plan["accelerator_count"]
    # A plan without a numeric count (hand-edited, or from an older scheduler) counts as none.
    gpus = case((func.jsonb_typeof(accelerators) == "number", accelerators.astext.cast(Float)))
    stmt = (
        select(
            Job.pool,
            func.count().filter(waiting).label("waiting"),
            func.count().filter(running).label("running"),
            func.coalesce(func.sum(gpus).filter(running), 0).label("gpus_in_use"),
            extract("epoch", func.now() - func.min(Job.created_at).filter(waiting)).label(
                "oldest_waiting_seconds"
            ),
        )
        .where(waiting | running)
        .group_by(Job.pool)
        .order_by(Job.pool.asc().nulls_first())
    )
    if team_id is not None:
        stmt = stmt.where(Job.team_id == team_id)
    pools = [
        {
            "pool": r.pool,
            "waiting": int(r.waiting),
            "running": int(r.running),
            "gpus_in_use": float(r.gpus_in_use or 0),
            "oldest_waiting_seconds": (
                round(float(r.oldest_waiting_seconds), 3) if r.oldest_waiting_seconds is not None else None
            ),
        }
        for r in session.execute(stmt)
    ]
    now = session.scalar(select(func.now()))
    assert isinstance(now, datetime)
    return {
        "object": "queue_summary",
        "waiting": sum(p["waiting"] for p in pools),
        "running": sum(p["running"] for p in pools),
        "gpus_in_use": sum(p["gpus_in_use"] for p in pools),
        "pools": pools,
        "as_of": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
