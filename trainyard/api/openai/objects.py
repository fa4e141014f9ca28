"""Platform objects in OpenAI's shapes: `file`, `fine_tuning.job`, its events and checkpoints.
Times are Unix seconds, as OpenAI's are.

* `fine_tuned_model` is the model's id, `ft:<base>:<team>:<suffix>:<job>` as OpenAI spells its
  own; it works as the `model` of a further job, and `model` shows it again for a job started from
  one. The final model's URI (a save_pretrained directory) is under `trainyard.final_model_uri`.
* `status` is OpenAI's, plus `paused`; a job that is stopping after a cancel stays `running` until
  its worker has stopped. Trainyard's own status and spend are under the extra key `trainyard`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from trainyard.api.openai.fine_tuning import BASE_LEARNING_RATE, LORA_HYPERPARAMETERS
from trainyard.platform import events, files, states
from trainyard.platform.models import Checkpoint, Job, JobEvent
from trainyard.platform.models_files import File
from trainyard.platform.registry import fine_tuned

# Trainyard status -> OpenAI status.
STATUS: dict[str, str] = {
    states.QUEUED: "queued",
    states.RUNNING: "running",
    states.CANCELLING: "running",
    states.SUCCEEDED: "succeeded",
    states.FAILED: "failed",
    states.CANCELLED: "cancelled",
    states.PAUSED: "paused",
}
# OpenAI's event levels are info, warn and error.
LEVELS = {"debug": "info", "info": "info", "warning": "warn", "error": "error"}
# Trainyard metric names -> OpenAI's, in events and checkpoints.
METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}
EVENT_ID_PREFIX = "ftevent-"


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_object(row: File) -> dict[str, Any]:
    """A file as OpenAI's API shows it."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": unix(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": None,
        "expires_at": None,
        "line_count": row.line_count,
    }


def file_deleted(row: File) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "deleted": True}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _hyperparameters_out(spec: Mapping[str, Any], method: str) -> dict[str, Any]:
    hp = spec.get("hyperparameters") or {}
    epochs = hp.get("epochs")
    learning_rate = float(hp.get("learning_rate", BASE_LEARNING_RATE))
    out: dict[str, Any] = {
        "n_epochs": "auto" if epochs is None else _number(epochs),
        "batch_size": hp.get("batch_size", "auto"),
        "learning_rate_multiplier": _number(round(learning_rate / BASE_LEARNING_RATE, 6)),
    }
    if method == "lora":
        out.update({k: hp[k] for k in LORA_HYPERPARAMETERS if k in hp})
    return out


def _estimated_finish(job: Job, now: datetime) -> int | None:
    seconds = (job.plan or {}).get("estimated_seconds")
    if job.status != states.RUNNING or not seconds or job.started_at is None:
        return None
    progress = job.progress or {}
    step, total = progress.get("step"), progress.get("total_steps")
    if step and total:
        # The plan's estimate, scaled to what is left: tracks resumes and slow starts alike.
        remaining = float(seconds) * max(0.0, 1.0 - float(step) / float(total))
        return int(now.timestamp() + remaining)
    return int(max(now.timestamp(), job.started_at.timestamp() + float(seconds)))


def job_object(
    job: Job,
    *,
    file_ids: Mapping[str, str] | None = None,
    result_files: Sequence[str] = (),
    model_id: str | None = None,
    base_model_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A job as OpenAI's `fine_tuning.job`. `file_ids` maps storage URIs to file ids
    (`files.file_ids_for_uris`); files given as URIs are shown as URIs. `model_id` is the ft id
    of the model the job made, `base_model_id` that of the model it started from, where it
    started from one of its team's (`fine_tuned.model_ids`, `fine_tuned.ids_for_uris`)."""
    now = now or datetime.now(UTC)
    spec = dict(job.spec)
    ids = file_ids or {}
    method = "lora" if spec.get("method") == "lora" else "supervised"
    hyperparameters = _hyperparameters_out(spec, method)
    training = spec.get("training_file")
    validation = spec.get("validation_file")
    progress = job.progress or {}
    plan = job.plan or {}
    final_uri = (job.result or {}).get("final_model_uri") if job.status == states.SUCCEEDED else None
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": unix(job.created_at),
        "finished_at": unix(job.finished_at),
        "estimated_finish": _estimated_finish(job, now),
        "model": base_model_id or spec.get("base_model"),
        "fine_tuned_model": (model_id or final_uri) if final_uri else None,
        "organization_id": job.team_id,
        "status": STATUS.get(job.status, job.status),
        "training_file": ids.get(training, training) if training else training,
        "validation_file": ids.get(validation, validation) if validation else None,
        "hyperparameters": hyperparameters,
        "method": {"type": method, method: {"hyperparameters": hyperparameters}},
        "result_files": list(result_files),
        "trained_tokens": job.tokens_trained
        if job.tokens_trained or job.status == states.SUCCEEDED
        else None,
        "seed": (spec.get("hyperparameters") or {}).get("seed", 0),
        "metadata": job.job_metadata or {},
        "user_provided_suffix": None if job.name.startswith("ft:") else job.name,
        "integrations": [],
        "error": (
            {"code": job.error_code, "message": job.error_message or job.error_code, "param": None}
            if job.status == states.FAILED and job.error_code
            else None
        ),
        "trainyard": {
            "status": job.status,
            "instance_type": job.instance_type,
            "pool": job.pool,
            "attempts": job.attempt_count,
            "cost_usd": round(job.cost_usd or 0.0, 6),
            "estimated_cost_usd": plan.get("estimated_cost_usd"),
            "estimated_seconds": plan.get("estimated_seconds"),
            "progress": {
                "step": progress.get("step", 0),
                "total_steps": progress.get("total_steps"),
                "loss": progress.get("loss"),
            },
            "cost_report_uri": (job.result or {}).get("cost_report_uri"),
            "final_model_uri": final_uri,
        },
    }


def job_objects(session: Session, rows: Sequence[Job]) -> list[dict[str, Any]]:
    """Render a page of jobs with one look-up for their files and result files."""
    results = files.result_file_ids(session, rows)
    models = fine_tuned.model_ids(session, rows)
    ids: dict[str, dict[str, str]] = {}
    bases: dict[str, str] = {}
    for team_id in {job.team_id for job in rows}:
        own = [job for job in rows if job.team_id == team_id]
        uris = [u for job in own for u in (job.spec.get("training_file"), job.spec.get("validation_file"))]
        ids[team_id] = files.file_ids_for_uris(session, uris, team_id=team_id)
        by_uri = fine_tuned.ids_for_uris(session, (j.spec.get("base_model") for j in own), team_id=team_id)
        bases.update({j.id: by_uri[j.spec["base_model"]] for j in own if j.spec.get("base_model") in by_uri})
    now = datetime.now(UTC)
    return [
        job_object(
            job,
            file_ids=ids[job.team_id],
            result_files=results.get(job.id, ()),
            model_id=models.get(job.id),
            base_model_id=bases.get(job.id),
            now=now,
        )
        for job in rows
    ]


def _metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {METRIC_NAMES.get(k, k): v for k, v in values.items()}
    if isinstance(out.get("step"), int | float):
        out["step"] = float(out["step"])
    return out


def event_object(event: JobEvent) -> dict[str, Any]:
    metrics = event.type == events.METRICS
    data = dict(event.data or {})
    return {
        "id": f"{EVENT_ID_PREFIX}{event.id}",
        "object": "fine_tuning.job.event",
        "created_at": unix(event.created_at),
        "level": LEVELS.get(event.level, "info"),
        "message": event.message,
        # OpenAI has two kinds; status changes, checkpoints and costs are messages with their data.
        "type": "metrics" if metrics else "message",
        "data": _metrics(data) if metrics else {"trainyard_type": event.type, **data},
    }


def event_cursor(after: str | None) -> str | None:
    """An event id as OpenAI shows it (`ftevent-N`) -> the job service's cursor (`evt_N`)."""
    if after is None:
        return None
    return "evt_" + after.removeprefix(EVENT_ID_PREFIX).removeprefix("evt_")


def checkpoint_object(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "id": ckpt.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": unix(ckpt.created_at),
        # A checkpoint is a directory in the store; its URI is what a later job or a download takes.
        "fine_tuned_model_checkpoint": ckpt.uri,
        "fine_tuning_job_id": ckpt.job_id,
        "step_number": ckpt.step,
        "metrics": _metrics({"step": ckpt.step, **(ckpt.metrics or {})}),
    }
