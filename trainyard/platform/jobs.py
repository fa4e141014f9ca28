"""The job service: insert (idempotent), get, list, cancel, pause, resume, events, checkpoints.

Every read goes through `get_job`, which hides other teams' jobs behind a 404 so that a key can
neither read nor learn of the existence of another team's job. Admin keys see all teams.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from trainyard.money import format_usd
from trainyard.platform import costs, events, queue, states
from trainyard.platform.auth import Principal
from trainyard.platform.errors import Conflict, InvalidRequest, NotFound
from trainyard.platform.models import Checkpoint, Job, JobAttempt, JobEvent, new_id
from trainyard.platform.spec import JobSpec

MAX_PAGE = 100
MAX_IDEMPOTENCY_KEY = 200  # the column's width


def request_hash(spec: JobSpec) -> str:
    """The request as the caller sent it: a relative deadline (`in 2h`) by its spelling, not the
    time it resolved to, so a retry with the same key and body is the same request."""
    body = spec.model_dump(mode="json")
    if spec.policy.deadline_as_asked is not None:
        body["policy"]["deadline"] = spec.policy.deadline_as_asked
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY):
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters", param="Idempotency-Key"
        )


def find_replay(
    session: Session, principal: Principal, idempotency_key: str | None, digest: str
) -> Job | None:
    """The team's job created with this Idempotency-Key, if any. The same key with another body
    (`digest`, from `request_hash`) is a 409: the key names one request, not any."""
    _check_key(idempotency_key)
    if idempotency_key is None:
        return None
    existing = session.scalar(
        select(Job).where(Job.team_id == principal.team_id, Job.idempotency_key == idempotency_key)
    )
    if existing is not None and existing.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    return existing


def create_job(
    session: Session,
    principal: Principal,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    plan: dict[str, Any] | None = None,
    pool: str | None = None,
    digest: str | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job and wake its pool's workers; returns (job, created). A job with the
    same key already there is returned (created False), or refused when its body differs.

    `trainyard.platform.submission` is the one caller that plans: it checks sources, files and
    budget first. `digest` is the request's `request_hash` (default: of `spec`).
    """
    _check_key(idempotency_key)
    digest = digest or request_hash(spec)
    job_id = new_id("job")
    values: dict[str, Any] = {
        "id": job_id,
        "team_id": principal.team_id,
        "api_key_id": principal.key_id,
        "name": spec.name,
        "status": states.QUEUED,
        "spec": spec.model_dump(mode="json"),
        "job_metadata": dict(spec.metadata),
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "plan": plan,
        "progress": {"phase": str(states.JobPhase.QUEUED)},
        "instance_type": (plan or {}).get("instance_type") or spec.instance_type,
        "pool": pool,
        "idempotency_key": idempotency_key,
        "request_hash": digest,
    }
    # ON CONFLICT DO NOTHING waits for a concurrent insert with the same key to commit, so of
    # any number of racing creates exactly one inserts and the rest find its row below.
    event = {"from": None, "to": states.QUEUED, **({"plan": plan} if plan else {})}
    params = {
        **{f"v_{name}": values[name] for name in _INSERTED},
        **{f"v_{n}": json.dumps(values[n]) if values[n] is not None else None for n in _INSERTED_JSON},
        "v_status": str(states.QUEUED),
        "event_data": json.dumps(event),
        "pool_payload": pool or "",
    }
    job = session.scalars(select(Job).from_statement(_CREATE_SQL), params).one_or_none()
    if job is None:
        existing = find_replay(session, principal, idempotency_key, digest)
        assert existing is not None
        return existing, False
    return job, True


# The insert, its `status` event and the notification that wakes the pool's workers, in one
# statement that returns the new row (none when the Idempotency-Key is taken).
_INSERTED_JSON = ("spec", "job_metadata", "plan", "progress")
_INSERTED = (
    "id",
    "team_id",
    "api_key_id",
    "name",
    "status",
    "priority",
    "max_attempts",
    "instance_type",
    "pool",
    "idempotency_key",
    "request_hash",
)
_COLUMN = {"job_metadata": "metadata"}
_CREATE_SQL = text(
    f"""
    WITH inserted AS (
        INSERT INTO jobs ({", ".join(_COLUMN.get(n, n) for n in (*_INSERTED, *_INSERTED_JSON))})
        VALUES ({
        ", ".join([*(f":v_{n}" for n in _INSERTED), *(f"CAST(:v_{n} AS jsonb)" for n in _INSERTED_JSON)])
    })
        ON CONFLICT ON CONSTRAINT uq_jobs_team_idempotency_key DO NOTHING
        RETURNING *
    ), event AS ({
        events.insert_sql(
            "inserted i",
            type=events.STATUS,
            job_id="i.id",
            attempt_id="NULL",
            message="'job queued'",
            data="CAST(:event_data AS jsonb)",
        )
    })
    SELECT inserted.*, pg_notify('{queue.NOTIFY_CHANNEL}', CAST(:pool_payload AS text)) AS notified
    FROM inserted
    """
)


def _visible(principal: Principal) -> Select[Job]:
    query = select(Job)
    if not principal.is_admin:
        query = query.where(Job.team_id == principal.team_id)
    return query


def get_job(session: Session, principal: Principal, job_id: str, *, for_update: bool = False) -> Job:
    query = _visible(principal).where(Job.id == job_id)
    if for_update:
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None:
        raise NotFound(f"no job {job_id!r}", code="job_not_found", param="job_id")
    return job


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")


def list_jobs(
    session: Session,
    principal: Principal,
    *,
    status: str | None = None,
    metadata: Mapping[str, str] | None = None,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[Job], bool]:
    """Newest first, keyset-paginated by `after` (a job id from the previous page)."""
    _check_limit(limit)
    query = _visible(principal)
    if status is not None:
        if status not in states.STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(states.STATUSES)}", param="status")
        query = query.where(Job.status == status)
    if metadata:
        query = query.where(Job.job_metadata.contains(dict(metadata)))
    if after is not None:
        cursor = session.scalar(_visible(principal).where(Job.id == after))
        if cursor is None:
            raise InvalidRequest(f"no job {after!r} to page after", param="after")
        query = query.where(Job.seq < cursor.seq)
    rows = list(session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Queued jobs are cancelled at once; running ones get a flag their worker sees on heartbeat."""
    job = get_job(session, principal, job_id, for_update=True)
    if job.status in (states.QUEUED, states.PAUSED):
        job.cancel_requested = True
        states.transition(session, job, states.CANCELLED, message=f"cancelled by {principal.key_id}")
    elif job.status == states.RUNNING:
        job.cancel_requested = True
        states.transition(
            session,
            job,
            states.CANCELLING,
            message=f"cancel requested by {principal.key_id}; waiting for the worker to stop",
        )
    elif job.status in (states.CANCELLING, states.CANCELLED):
        pass  # cancelling twice is not an error: a retried cancel must not report a failure
    else:
        raise Conflict(f"job {job_id} is already {job.status}", code="job_not_cancellable", param="job_id")
    session.flush()
    return job


def pause_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Pause a job: a queued one at once; a running one once its worker has saved a checkpoint
    and handed the job back (it sees the request on its next heartbeat). Pausing twice is fine."""
    job = get_job(session, principal, job_id, for_update=True)
    if job.status == states.QUEUED:
        states.transition(session, job, states.PAUSED, message=f"paused by {principal.key_id}")
    elif job.status == states.RUNNING:
        if not job.pause_requested:
            job.pause_requested = True
            events.add(
                session,
                job.id,
                events.MESSAGE,
                f"pause requested by {principal.key_id}; the worker saves a checkpoint and stops "
                "at its next heartbeat",
                data={"pause_requested": True},
            )
    elif job.status != states.PAUSED:
        raise Conflict(
            f"job {job_id} is {job.status} and cannot be paused", code="job_not_pausable", param="job_id"
        )
    session.flush()
    return job


# Why a job failed when it stopped for its budget (`workers.outcome.stopped_outcome`).
BUDGET_STOP = "budget_exceeded"
MAX_COST_USD = 10_000_000  # the spec's bound on policy.max_cost_usd


def resume_job(
    session: Session, principal: Principal, job_id: str, *, max_cost_usd: float | None = None
) -> Job:
    """Queue a paused job again, or one stopped for its budget once the budget allows; its next
    attempt resumes from the latest checkpoint. A pause that has not taken effect yet is
    withdrawn. Resuming a job that is queued or running changes nothing but `max_cost_usd`,
    which, when given, becomes the job's cap (policy.max_cost_usd) from now on."""
    job = get_job(session, principal, job_id, for_update=True)
    budget_stop = job.status == states.FAILED and job.error_code == BUDGET_STOP
    if job.status not in (states.PAUSED, states.QUEUED, states.RUNNING) and not budget_stop:
        raise Conflict(
            f"job {job_id} is {job.status} and cannot be resumed", code="job_not_resumable", param="job_id"
        )
    if max_cost_usd is not None:
        _set_cap(job, max_cost_usd)
    if budget_stop:
        _check_budget_allows(session, job)
        job.error_code = job.error_message = None
        job.finished_at = None
    if job.status in (states.PAUSED, states.FAILED):
        job.pause_requested = False
        job.run_after = states.utcnow()
        states.transition(
            session,
            job,
            states.QUEUED,
            message=f"resumed by {principal.key_id}; queued to continue from its latest checkpoint",
        )
        queue.notify(session, job.pool)
    elif job.status == states.RUNNING and job.pause_requested:
        job.pause_requested = False
        events.add(
            session,
            job.id,
            events.MESSAGE,
            f"pause withdrawn by {principal.key_id}",
            data={"pause_requested": False},
        )
    session.flush()
    return job


def _set_cap(job: Job, max_cost_usd: float) -> None:
    if (
        isinstance(max_cost_usd, bool)
        or not math.isfinite(max_cost_usd)
        or not 0 < max_cost_usd <= MAX_COST_USD
    ):
        raise InvalidRequest(
            f"max_cost_usd must be more than 0 and at most {MAX_COST_USD:,}", param="max_cost_usd"
        )
    spec = dict(job.spec)
    spec["policy"] = {**(spec.get("policy") or {}), "max_cost_usd": float(max_cost_usd)}
    job.spec = spec


def _check_budget_allows(session: Session, job: Job) -> None:
    """Refuse (409 `budget_exhausted`) to resume a job its cap or its team's budget still
    stops: spent at least its cap, or at the pace its last attempt trained, needing more than
    the cap to finish; or the rest of its estimate does not fit in what its team has left."""
    cap = (job.spec.get("policy") or {}).get("max_cost_usd")
    if isinstance(cap, int | float):
        last = session.scalar(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.number.desc()).limit(1)
        )
        at = last.heartbeat_at if last is not None else None
        projected = (
            costs.projected_cost(job, last, at, costs.PaceRule.from_settings()) if last and at else None
        )
        need = max(job.cost_usd, projected or 0.0)
        if need >= cap:
            usd = format_usd
            why = (
                f"has spent {usd(job.cost_usd)} of its {usd(cap)} cap"
                if job.cost_usd >= cap
                else f"would need about {usd(need)} at the pace it trained, more than its {usd(cap)} cap"
            )
            raise costs.BudgetExhausted(
                f"job {job.id} {why} (policy.max_cost_usd); resume it with a higher max_cost_usd",
                param="max_cost_usd",
            )
    estimate = (job.plan or {}).get("estimated_cost_usd")
    rest = max(0.0, float(estimate) - job.cost_usd) if isinstance(estimate, int | float) else None
    costs.check_budget(session, job.team_id, rest)


def _event_id(raw: str) -> int:
    try:
        return int(raw.removeprefix("evt_"))
    except ValueError:
        raise InvalidRequest(f"invalid event cursor {raw!r}", param="after") from None


def list_events(
    session: Session,
    principal: Principal,
    job_id: str,
    *,
    after: str | None = None,
    limit: int = 20,
    order: str = "asc",
) -> tuple[list[JobEvent], bool]:
    """Events oldest first by default, so a follower can resume with `after` the last one seen."""
    _check_limit(limit)
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    get_job(session, principal, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        cursor = _event_id(after)
        query = query.where(JobEvent.id > cursor if order == "asc" else JobEvent.id < cursor)
    query = query.order_by(JobEvent.id.asc() if order == "asc" else JobEvent.id.desc())
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_checkpoints(
    session: Session, principal: Principal, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[Checkpoint], bool]:
    """Newest (highest step) first, like the job list."""
    _check_limit(limit)
    get_job(session, principal, job_id)
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        cursor = session.scalar(query.where(Checkpoint.id == after))
        if cursor is None:
            raise InvalidRequest(f"no checkpoint {after!r} to page after", param="after")
        query = query.where(Checkpoint.step < cursor.step)
    rows = list(session.scalars(query.order_by(Checkpoint.step.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
