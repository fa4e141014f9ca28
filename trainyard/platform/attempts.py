"""Writes a running attempt makes besides its heartbeat: checkpoints and events. Each is fenced
(`queue.fence`), so once a newer attempt owns the job, these raise LeaseLost and write nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from trainyard.platform import events, queue, replanning
from trainyard.platform.costs import ledger
from trainyard.platform.models import Checkpoint


def record_event(
    session: Session,
    attempt_id: str,
    type: str,
    message: str,
    *,
    data: dict[str, Any] | None = None,
    level: str = "info",
) -> None:
    """Record an event the attempt reports; `events.add` refuses a type not in `events.TYPES`."""
    job, _ = queue.fence(session, attempt_id)
    events.add(session, job.id, type, message, attempt_id=attempt_id, level=level, data=data)
    session.commit()


MAX_TRIAL = 64  # the column's width


def record_checkpoint(
    session: Session,
    attempt_id: str,
    *,
    step: int,
    uri: str,
    metrics: dict[str, Any] | None = None,
    keep: int | None = None,
    trial: str | None = None,
) -> list[str]:
    """Record a completed (persisted) checkpoint; from then on it is the job's, to resume from.
    A sweep's checkpoints are each its `trial`'s: every trial counts its own steps.

    A step saved again by a later attempt replaces the earlier record (of the same trial). With
    `keep`, only the `keep` latest checkpoints of the job (of the trial) stay recorded, whichever
    attempts wrote them. Returns the URIs no longer recorded (replaced or beyond `keep`), for the
    caller to delete from the store once this is committed: a file is deleted only after no row
    points at it.

    A checkpoint is progress too: the attempt got at least that far (heartbeats may lag), so
    the attempt that resumes from it never counts the steps up to it as new or as redone. A
    sweep has got at least as far as all its trials' latest checkpoints together.
    """
    job, attempt = queue.fence(session, attempt_id)
    trial = (trial or "")[:MAX_TRIAL]
    values = {
        "job_id": job.id,
        "attempt_id": attempt_id,
        "trial": trial,
        "step": step,
        "uri": uri,
        "metrics": metrics or {},
    }
    same = (Checkpoint.job_id == job.id, Checkpoint.trial == trial)
    replaced = session.scalar(select(Checkpoint.uri).where(*same, Checkpoint.step == step))
    stmt = pg_insert(Checkpoint).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            constraint="uq_checkpoints_job_trial_step",
            set_={"attempt_id": attempt_id, "uri": uri, "metrics": metrics or {}},
        )
    )
    if trial:
        reach, reach_tokens = trials_reach(session, job.id)
        ledger.record_progress(attempt, step=reach, tokens=reach_tokens)
    else:
        ledger.record_progress(attempt, step=step, tokens=(metrics or {}).get("tokens_seen"))
    gone = [replaced] if replaced is not None and replaced != uri else []
    if keep is not None:
        older = session.scalars(
            select(Checkpoint).where(*same).order_by(Checkpoint.step.desc()).offset(keep)
        ).all()
        for ckpt in older:
            gone.append(ckpt.uri)
            session.delete(ckpt)
    events.add(
        session,
        job.id,
        events.CHECKPOINT,
        f"checkpoint at step {step}",
        attempt_id=attempt_id,
        data={"step": step, "uri": uri, "metrics": metrics or {}},
    )
    # Each checkpoint is a point to re-plan from: the deadline contract may move the job off spot.
    replanning.at_checkpoint(session, job, attempt)
    session.commit()
    return gone


def latest_checkpoint(session: Session, job_id: str, trial: str = "") -> Checkpoint | None:
    """The job's (or a sweep trial's) latest recorded checkpoint."""
    return session.scalar(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.trial == trial)
        .order_by(Checkpoint.step.desc())
        .limit(1)
    )


def trials_reach(session: Session, job_id: str) -> tuple[int, int]:
    """How far a sweep's trials have got together, by their latest checkpoints: the sum of their
    steps, and of the tokens each had trained by then (0 where a checkpoint has no count)."""
    latest = (
        select(Checkpoint.trial, func.max(Checkpoint.step).label("step"))
        .where(Checkpoint.job_id == job_id, Checkpoint.trial != "")
        .group_by(Checkpoint.trial)
        .subquery()
    )
    rows = session.execute(
        select(Checkpoint.step, Checkpoint.metrics)
        .join(
            latest,
            (Checkpoint.trial == latest.c.trial) & (Checkpoint.step == latest.c.step),
        )
        .where(Checkpoint.job_id == job_id)
    ).all()
    steps = sum(step for step, _ in rows)
    tokens = sum(ledger.count((metrics or {}).get("tokens_seen")) or 0 for _, metrics in rows)
    return steps, tokens


def set_start_step(session: Session, attempt_id: str, step: int) -> None:
    """The attempt resumes from the job's checkpoint at `step`; the ledger counts what it
    trains from there (and what it redoes of earlier attempts' work)."""
    _, attempt = queue.fence(session, attempt_id)
    ledger.record_start(attempt, step, ledger.checkpoint_tokens(session, attempt, step))
    session.commit()


def set_sweep_start(session: Session, attempt_id: str) -> None:
    """The attempt resumes a sweep: each trial from its own latest checkpoint (Tune restores
    them), so it starts where the trials have got together (`trials_reach`)."""
    job, attempt = queue.fence(session, attempt_id)
    step, tokens = trials_reach(session, job.id)
    ledger.record_start(attempt, step, tokens)
    session.commit()


def prune_checkpoints(session: Session, attempt_id: str, kept_uris: list[str]) -> int:
    """Forget checkpoints the trainer deleted under its `keep` policy, so that every listed
    checkpoint exists in the store."""
    job, _ = queue.fence(session, attempt_id)
    gone = session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.uri.not_in(kept_uris))
    ).all()
    for ckpt in gone:
        session.delete(ckpt)
    session.commit()
    return len(gone)
