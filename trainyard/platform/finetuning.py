"""OpenAI's fine-tuning API over Trainyard's job service: request -> JobSpec, job -> `fine_tuning.job`,
events and checkpoints in OpenAI's shapes, and pause/resume.

There is one job store: a fine-tuning job *is* a Trainyard job, so `/v1/jobs` and
`/v1/fine_tuning/jobs` show the same jobs in two dialects.

Mapping choices, where OpenAI leaves room:

* `model` is the base model (a Hugging Face id or a model URI); `method.type` "supervised" is a
  full fine-tune, "lora" (or the extra body field `method_type: "lora"`) a LoRA one.
* "auto" hyperparameters take Trainyard's defaults; `learning_rate_multiplier` scales
  `BASE_LEARNING_RATE`. Trainyard's own hyperparameters (`max_steps`, `seq_len`, ...) are accepted
  beside OpenAI's, as are the job fields `policy`, `instance_type`, `max_cost_usd`, `task`,
  `model_parameters`, `dataset_tokens`, `priority`, `max_attempts` and `checkpoint`.
* `fine_tuned_model` is the URI of the final model (a save_pretrained directory): a string the
  client parses as it parses OpenAI's names, and one that works as the `model` of a further job.
* `status` is OpenAI's, plus `paused`; a job that is stopping after a cancel stays `running` until
  its worker has stopped. Trainyard's own status and spend are under the extra key `trainyard`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from trainyard.platform import costs, files, jobs, queue, states
from trainyard.platform.auth import Principal
from trainyard.platform.errors import Conflict, InvalidRequest
from trainyard.platform.models import Checkpoint, Job, JobEvent
from trainyard.platform.planning import Planner, check_sources
from trainyard.platform.spec import Hyperparameters, JobSpec, Task

BASE_LEARNING_RATE: float = Hyperparameters.model_fields["learning_rate"].default
METHOD_TYPES = ("supervised", "lora")
OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
LORA_HYPERPARAMETERS = ("lora_r", "lora_alpha", "lora_dropout")

# Trainyard status -> OpenAI status.
STATUS = {
    states.QUEUED: "queued",
    states.RUNNING: "running",
    states.CANCELLING: "running",
    states.SUCCEEDED: "succeeded",
    states.FAILED: "failed",
    states.CANCELLED: "cancelled",
    "paused": "paused",
}
# OpenAI's event levels are info, warn and error.
LEVELS = {"debug": "info", "info": "info", "warning": "warn", "error": "error"}
# Trainyard metric names -> OpenAI's, in events and checkpoints.
METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}
EVENT_ID_PREFIX = "ftevent-"


class FineTuningJobRequest(BaseModel):
    """The body of `POST /v1/fine_tuning/jobs`: OpenAI's fields, then Trainyard's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())

    model: str = Field(min_length=1, max_length=1024)
    training_file: str = Field(min_length=1, max_length=1024)
    validation_file: str | None = Field(default=None, min_length=1, max_length=1024)
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    # Trainyard's fields, which the openai client sends through `extra_body`.
    method_type: Literal["supervised", "lora"] | None = None
    task: Task | None = None
    policy: dict[str, Any] | None = None
    instance_type: str | None = None
    max_cost_usd: float | None = None
    model_parameters: int | None = None
    dataset_tokens: int | None = None
    priority: int | None = None
    max_attempts: int | None = None
    checkpoint: dict[str, Any] | None = None


# ------------------------------------------------------------------------------- request -> spec


def _method(req: FineTuningJobRequest) -> tuple[str, dict[str, Any]]:
    """The method type and the hyperparameters given under `method`."""
    kind = "supervised"
    given: dict[str, Any] = {}
    if req.method is not None:
        given_type = req.method.get("type")
        if given_type not in METHOD_TYPES:
            raise InvalidRequest(
                f"method.type {given_type!r} is not supported; use one of {', '.join(METHOD_TYPES)}",
                code="unsupported_method",
                param="method.type",
            )
        kind = str(given_type)
        section = req.method.get(kind) or {}
        if not isinstance(section, dict) or not isinstance(section.get("hyperparameters") or {}, dict):
            raise InvalidRequest(
                f"method.{kind} must be an object with a 'hyperparameters' object", param=f"method.{kind}"
            )
        given = dict(section.get("hyperparameters") or {})
    if req.method_type == "lora":
        kind = "lora"
    return kind, given


def _hyperparameters(given: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's hyperparameters (and Trainyard's own) as JobSpec hyperparameters."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        param = f"hyperparameters.{name}"
        if value is None or value == "auto":
            continue  # "auto" means Trainyard's default
        if name == "n_epochs":
            out["epochs"] = value
        elif name == "learning_rate_multiplier":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidRequest(f"{param} must be 'auto' or a positive number", param=param)
            if "learning_rate" in given:
                raise InvalidRequest(f"give learning_rate or {name}, not both", param=param)
            out["learning_rate"] = BASE_LEARNING_RATE * float(value)
        elif name in Hyperparameters.model_fields:
            out[name] = value
        else:
            raise InvalidRequest(f"unknown hyperparameter {name!r}", code="unknown_parameter", param=param)
    return out


_SPEC_PARAMS = {"epochs": "n_epochs", "name": "suffix", "base_model": "model"}


def _spec_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    loc = [_SPEC_PARAMS.get(str(p), str(p)) for p in first.get("loc", ())]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    return InvalidRequest(f"{param}: {message}" if param else message, code="invalid_value", param=param)


def to_job_spec(req: FineTuningJobRequest) -> JobSpec:
    """The JobSpec for an OpenAI request; its files are still as given (`file-...` ids or URIs)."""
    if req.integrations:
        raise InvalidRequest(
            "integrations are not supported; follow the job with its events and checkpoints",
            code="unsupported_parameter",
            param="integrations",
        )
    kind, method_hp = _method(req)
    hp = _hyperparameters({**(req.hyperparameters or {}), **method_hp})
    if req.seed is not None:
        hp["seed"] = req.seed
    policy = dict(req.policy or {})
    if req.max_cost_usd is not None:
        policy["max_cost_usd"] = req.max_cost_usd
    body: dict[str, Any] = {
        # A job needs a name: the suffix names the model in OpenAI, so it names the job here.
        "name": req.suffix or f"ft:{req.model}"[:200],
        "base_model": req.model,
        "method": "lora" if kind == "lora" else "full",
        "training_file": req.training_file,
        "validation_file": req.validation_file,
        "hyperparameters": hp,
        "policy": policy,
        "metadata": req.metadata or {},
    }
    for name in (
        "task",
        "instance_type",
        "model_parameters",
        "dataset_tokens",
        "priority",
        "max_attempts",
        "checkpoint",
    ):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    try:
        return JobSpec.model_validate(body)
    except ValidationError as exc:
        raise _spec_error(exc) from None


def create_job(
    session: Session,
    principal: Principal,
    req: FineTuningJobRequest,
    *,
    planner: Planner,
    allow_local_paths: bool,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Plan the job as `/v1/jobs` does (sources, files, team budget) and queue it."""
    spec = to_job_spec(req)
    # Checked before the files are resolved: what the caller named must not be a server path, but
    # the URIs of uploaded files are the platform's own and may be local (a file:// store).
    check_sources(spec, allow_local_paths=allow_local_paths)
    spec = files.resolve_spec_files(session, principal, spec)
    plan, pool = planner.plan(session, spec)
    costs.check_budget(session, principal.team_id, plan.get("estimated_cost_usd"))
    return jobs.create_job(session, principal, spec, idempotency_key=idempotency_key, plan=plan, pool=pool)


# ------------------------------------------------------------------------------- pause and resume


def pause_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Pause a job: a queued one at once; a running one once its worker has saved a checkpoint
    and handed the job back (it sees the request on its next heartbeat). Pausing twice is fine."""
    job = jobs.get_job(session, principal, job_id, for_update=True)
    if job.status == states.QUEUED:
        states.transition(session, job, states.PAUSED, message=f"paused by {principal.key_id}")
    elif job.status == states.RUNNING:
        if not job.pause_requested:
            job.pause_requested = True
            session.add(
                JobEvent(
                    job_id=job.id,
                    type="message",
                    message=(
                        f"pause requested by {principal.key_id}; the worker saves a checkpoint and stops "
                        "at its next heartbeat"
                    ),
                    data={"pause_requested": True},
                )
            )
    elif job.status != states.PAUSED:
        raise Conflict(
            f"job {job_id} is {job.status} and cannot be paused", code="job_not_pausable", param="job_id"
        )
    session.flush()
    return job


def resume_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Queue a paused job again; its next attempt resumes from the latest checkpoint. A pause that
    has not taken effect yet is withdrawn. Resuming a job that is not paused changes nothing."""
    job = jobs.get_job(session, principal, job_id, for_update=True)
    if job.status == states.PAUSED:
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
        session.add(
            JobEvent(
                job_id=job.id,
                type="message",
                message=f"pause withdrawn by {principal.key_id}",
                data={"pause_requested": False},
            )
        )
    elif job.status not in (states.QUEUED, states.RUNNING):
        raise Conflict(
            f"job {job_id} is {job.status} and cannot be resumed", code="job_not_resumable", param="job_id"
        )
    session.flush()
    return job


# ---------------------------------------------------------------------------------- job -> OpenAI


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
    now: datetime | None = None,
) -> dict[str, Any]:
    """A job as OpenAI's `fine_tuning.job`. `file_ids` maps storage URIs to file ids
    (`files.file_ids_for_uris`); files given as URIs are shown as URIs."""
    now = now or datetime.now(UTC)
    spec = dict(job.spec)
    ids = file_ids or {}
    method = "lora" if spec.get("method") == "lora" else "supervised"
    hyperparameters = _hyperparameters_out(spec, method)
    training = spec.get("training_file")
    validation = spec.get("validation_file")
    progress = job.progress or {}
    plan = job.plan or {}
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": files.unix(job.created_at),
        "finished_at": files.unix(job.finished_at),
        "estimated_finish": _estimated_finish(job, now),
        "model": spec.get("base_model"),
        "fine_tuned_model": (job.result or {}).get("final_model_uri")
        if job.status == states.SUCCEEDED
        else None,
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
        },
    }


def job_objects(session: Session, rows: Sequence[Job]) -> list[dict[str, Any]]:
    """Render a page of jobs with one look-up for their files and result files."""
    uris = [u for job in rows for u in (job.spec.get("training_file"), job.spec.get("validation_file"))]
    ids = files.file_ids_for_uris(session, uris)
    results = files.result_file_ids(session, rows)
    now = datetime.now(UTC)
    return [job_object(job, file_ids=ids, result_files=results.get(job.id, ()), now=now) for job in rows]


def _metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {METRIC_NAMES.get(k, k): v for k, v in values.items()}
    if isinstance(out.get("step"), int | float):
        out["step"] = float(out["step"])
    return out


def event_object(event: JobEvent) -> dict[str, Any]:
    metrics = event.type == "metrics"
    data = dict(event.data or {})
    return {
        "id": f"{EVENT_ID_PREFIX}{event.id}",
        "object": "fine_tuning.job.event",
        "created_at": files.unix(event.created_at),
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
        "created_at": files.unix(ckpt.created_at),
        # A checkpoint is a directory in the store; its URI is what a later job or a download takes.
        "fine_tuned_model_checkpoint": ckpt.uri,
        "fine_tuning_job_id": ckpt.job_id,
        "step_number": ckpt.step,
        "metrics": _metrics({"step": ckpt.step, **(ckpt.metrics or {})}),
    }
