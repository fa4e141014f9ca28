"""How platform objects look on the wire. Times are RFC 3339 UTC strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from trainyard.platform.models import Checkpoint, Job, JobEvent
from trainyard.platform.states import QUEUED, JobPhase

T = TypeVar("T")


def ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def page(items: Sequence[T], has_more: bool, render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [render(i) for i in items], "has_more": has_more}


def planned_steps(job: Job) -> int | None:
    """The steps the run will take before its trainer says: the spec's max_steps, else the
    plan's count (dataset tokens over tokens per step)."""
    hyperparameters = (job.spec or {}).get("hyperparameters") or {}
    steps = hyperparameters.get("max_steps") or (job.plan or {}).get("total_steps")
    return int(steps) if steps else None


def job_out(
    job: Job, *, goodput: dict[str, Any] | None = None, fine_tuned_model: str | None = None
) -> dict[str, Any]:
    """A job on the wire; `goodput` (`costs.job_goodput`) goes in its cost where given;
    `fine_tuned_model` is the id of the model a succeeded job made (`registry.fine_tuned`)."""
    spec = dict(job.spec)
    progress = dict(job.progress or {})
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "team": job.team_id,
        **spec,
        "metadata": job.job_metadata or {},
        "plan": job.plan,
        "instance_type": job.instance_type or spec.get("instance_type"),
        "pool": job.pool,
        "progress": {
            "step": progress.get("step", 0),
            "total_steps": progress.get("total_steps") or planned_steps(job),
            # What the run is doing (`states.JobPhase`); a job queued before phases were
            # recorded is still waiting.
            "phase": progress.get("phase") or (str(JobPhase.QUEUED) if job.status == QUEUED else None),
            # A sweep's trials: how many have started (`trial`) of how many it runs (`trials`).
            "trial": progress.get("trial"),
            "trials": progress.get("trials"),
            "tokens": progress.get("tokens", job.tokens_trained or 0),
            "loss": progress.get("loss"),
            "tokens_per_second": progress.get("tokens_per_second"),
        },
        "cost": {
            "usd": round(job.cost_usd or 0.0, 6),
            "billable_seconds": round(job.billable_seconds or 0.0, 3),
            "estimated_usd": (job.plan or {}).get("estimated_cost_usd"),
            **({"goodput": goodput} if goodput is not None else {}),
        },
        "attempts": job.attempt_count,
        "cancel_requested": job.cancel_requested,
        "pause_requested": job.pause_requested,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "result": job.result,
        "fine_tuned_model": fine_tuned_model,
        "created_at": ts(job.created_at),
        "started_at": ts(job.started_at),
        "finished_at": ts(job.finished_at),
    }


def event_out(event: JobEvent) -> dict[str, Any]:
    return {
        "id": f"evt_{event.id}",
        "object": "job.event",
        "job_id": event.job_id,
        "attempt_id": event.attempt_id,
        "type": event.type,
        "level": event.level,
        "message": event.message,
        "data": event.data or {},
        "created_at": ts(event.created_at),
    }


def checkpoint_out(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "id": ckpt.id,
        "object": "job.checkpoint",
        "job_id": ckpt.job_id,
        "attempt_id": ckpt.attempt_id,
        "trial": ckpt.trial or None,
        "step": ckpt.step,
        "metrics": ckpt.metrics or {},
        "uri": ckpt.uri,
        "created_at": ts(ckpt.created_at),
    }
