"""The job state machine and the attempt outcomes: the one vocabulary, enforced here and only here.

    queued ──claim──> running ──> succeeded
      │                 │  ├────> failed      (user error, or attempts exhausted)
      │                 │  ├────> queued      (retry after backoff, lease rescue, graceful hand-back)
      │                 │  └────> cancelling ──> cancelled (the worker saw the flag, or its lease ran out)
      ├──> cancelled    │                    └─> succeeded | failed (finished before it saw the flag)
      └──> failed       └────> cancelled
      (queued -> failed: the scheduler found no feasible instance)

    queued | running ──pause──> paused ──resume──> queued      paused ──> cancelled
      (a running job pauses once its worker has checkpointed and handed it back)
    failed ──resume──> queued   (only a job stopped for its budget, once the budget allows)

Every transition writes a `status` event in the same transaction (`events.add`). The database
refuses any status or outcome not spelled here (CHECK constraints, migration 0003).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from trainyard.platform.errors import Conflict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from trainyard.platform.models import Job


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


class AttemptOutcome(StrEnum):
    """How an attempt ended; null (no outcome) while it runs."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the job's own fault (bad data, budget): not retried
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # its node went away (spot reclaim, drain)
    CRASHED = "crashed"  # the attempt process or training died
    LOST = "lost"  # its lease expired: the worker stopped heartbeating
    HANDED_BACK = "handed_back"  # pause or graceful shutdown, after a checkpoint


class JobPhase(StrEnum):
    """What a job's run is doing, as `progress.phase` says: waiting, then the attempt's own steps.

    `queued` until a worker claims the job (and again whenever it goes back to the queue);
    `starting_workers` from the claim until the run's workers begin loading the model; then the
    training loop's rank 0 reports `loading_model`, `training`, `checkpointing` around each save
    and `saving` for the final model, through the run's progress reports."""

    QUEUED = "queued"
    STARTING_WORKERS = "starting_workers"
    LOADING_MODEL = "loading_model"
    TRAINING = "training"
    CHECKPOINTING = "checkpointing"
    SAVING = "saving"


QUEUED = JobStatus.QUEUED
RUNNING = JobStatus.RUNNING
CANCELLING = JobStatus.CANCELLING
SUCCEEDED = JobStatus.SUCCEEDED
FAILED = JobStatus.FAILED
CANCELLED = JobStatus.CANCELLED
PAUSED = JobStatus.PAUSED

STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
OUTCOMES: tuple[AttemptOutcome, ...] = tuple(AttemptOutcome)
PHASES: tuple[JobPhase, ...] = tuple(JobPhase)
TERMINAL: frozenset[JobStatus] = frozenset({SUCCEEDED, FAILED, CANCELLED})
# A job holding an instance: counts against pool capacity and team quotas.
ACTIVE: frozenset[JobStatus] = frozenset({RUNNING, CANCELLING})
# A job a worker will still run or is running: waits on the queue or holds an instance.
PENDING: frozenset[JobStatus] = frozenset({QUEUED, RUNNING, CANCELLING, PAUSED})
# Outcomes that use up one of the job's `max_attempts`. A preemption is the capacity's doing, not
# the job's: it counts against `max_preemptions` instead (`queue.preemptions`), as Ray Train's
# FailureConfig keeps `max_preemption_failures` apart from `max_failures`.
COUNTS_AS_FAILURE: frozenset[AttemptOutcome] = frozenset(
    {AttemptOutcome.FAILED, AttemptOutcome.CRASHED, AttemptOutcome.LOST}
)
# Outcomes whose spend bought nothing that survives: no checkpoint carried the work forward.
# A hand-back keeps its checkpoint, so it is not waste.
WASTED: frozenset[AttemptOutcome] = frozenset(
    {AttemptOutcome.FAILED, AttemptOutcome.CRASHED, AttemptOutcome.LOST, AttemptOutcome.PREEMPTED}
)

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED, PAUSED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, QUEUED, CANCELLING, CANCELLED, PAUSED}),
    PAUSED: frozenset({QUEUED, CANCELLED}),
    CANCELLING: frozenset({CANCELLED, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    # Only a job stopped for its budget, resumed once the budget allows (`jobs.resume_job`).
    FAILED: frozenset({QUEUED}),
    CANCELLED: frozenset(),
}


def sql_list(values: frozenset[str] | tuple[str, ...]) -> str:
    """`'a', 'b'` for a SQL `IN (...)`, from a set defined here (never from input)."""
    return ", ".join(f"'{v}'" for v in sorted(str(v) for v in values))


def utcnow() -> datetime:
    return datetime.now(UTC)


def checked_progress(progress: Mapping[str, Any]) -> dict[str, Any]:
    """`progress` as it may be written to a job: a `phase` spelled here, and a sweep's `trial`
    (how many of its trials have started) and `trials` (how many it runs) as 1 <= trial <= trials.
    Raises ValueError otherwise: a worker that reports another word has a bug worth hearing of."""
    out = dict(progress)
    if out.get("phase") is not None:
        try:
            out["phase"] = str(JobPhase(out["phase"]))
        except ValueError:
            raise ValueError(
                f"unknown progress phase {out['phase']!r}; one of {[str(p) for p in PHASES]}"
            ) from None
    trial, trials = out.get("trial"), out.get("trials")
    for name, value in (("trial", trial), ("trials", trials)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"progress {name} must be a positive whole number, not {value!r}")
    if isinstance(trial, int) and isinstance(trials, int) and trial > trials:
        raise ValueError(f"progress trial {trial} is past the sweep's {trials} trials")
    return out


def can_transition(src: str, dst: str) -> bool:
    try:
        return JobStatus(dst) in ALLOWED.get(JobStatus(src), frozenset())
    except ValueError:
        return False


def check_transition(job_id: str, src: str, dst: str) -> None:
    """Refuse (Conflict `invalid_state`) a move the state machine does not allow."""
    if not can_transition(src, dst):
        raise Conflict(f"job {job_id} cannot go from {src} to {dst}", code="invalid_state")


def transition(
    session: Session,
    job: Job,
    dst: JobStatus,
    *,
    message: str,
    attempt_id: str | None = None,
    data: dict[str, Any] | None = None,
    level: str = "info",
) -> None:
    """Move `job` to `dst` (the caller holds the row lock) and record the event."""
    from trainyard.platform import events

    src = job.status
    check_transition(job.id, src, dst)
    now = utcnow()
    job.status = JobStatus(dst)
    job.updated_at = now
    if dst == RUNNING and job.started_at is None:
        job.started_at = now
    if dst in TERMINAL:
        job.finished_at = now
    if dst == QUEUED:
        # Back in line: whatever its last attempt was doing, it waits now.
        job.progress = {**(job.progress or {}), "phase": str(JobPhase.QUEUED)}
    events.add(
        session,
        job.id,
        events.STATUS,
        message,
        attempt_id=attempt_id,
        level=level,
        data={"from": src, "to": str(dst), **(data or {})},
    )
