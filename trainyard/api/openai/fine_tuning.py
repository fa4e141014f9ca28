"""The body of `POST /v1/fine_tuning/jobs` and its mapping onto a `JobSpec`.

Mapping choices, where OpenAI leaves room:

* `model` is the base model (a Hugging Face id, an ft id from `/v1/models`, or a model URI);
  `method.type` "supervised" is a full fine-tune, "lora" (or the extra body field
  `method_type: "lora"`) a LoRA one.
* "auto" hyperparameters take Trainyard's defaults; `learning_rate_multiplier` scales
  `BASE_LEARNING_RATE`. Trainyard's own hyperparameters (`max_steps`, `seq_len`, ...) are accepted
  beside OpenAI's, as are the job fields `policy`, `instance_type`, `max_cost_usd`, `task`,
  `model_parameters`, `dataset_tokens`, `priority`, `max_attempts`, `max_preemptions` and `checkpoint`.
* A job needs a name: the `suffix` names the model in OpenAI, so it names the job here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainyard.platform.errors import InvalidRequest, Unprocessable
from trainyard.platform.registry.names import short_name
from trainyard.platform.spec import (
    METADATA_SCHEMA,
    CheckpointPolicy,
    DatasetTokens,
    Hyperparameters,
    InstanceTypeName,
    JobSpec,
    MaxAttempts,
    MaxCostUsd,
    MaxPreemptions,
    Metadata,
    ModelParameters,
    Priority,
    Seed,
    Task,
    UriStr,
)

BASE_LEARNING_RATE: float = Hyperparameters.model_fields["learning_rate"].default
METHOD_TYPES = ("supervised", "lora")
LORA_HYPERPARAMETERS = ("lora_r", "lora_alpha", "lora_dropout")


class FineTuningJobRequest(BaseModel):
    """The body of `POST /v1/fine_tuning/jobs`: OpenAI's fields, then Trainyard's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())

    # The limits are the job spec's, so what the schema allows is what the spec accepts.
    model: UriStr
    training_file: UriStr
    validation_file: UriStr | None = None
    hyperparameters: dict[str, Any] | None = None
    # Checked by `_method` (400 `unsupported_method`); the schema states the choices.
    method: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"properties": {"type": {"enum": list(METHOD_TYPES)}}, "required": ["type"]},
    )
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: Seed | None = None
    metadata: Metadata | None = Field(default=None, json_schema_extra=METADATA_SCHEMA)
    integrations: list[Any] | None = Field(default=None, json_schema_extra={"maxItems": 0})  # unsupported
    # Trainyard's fields, which the openai client sends through `extra_body`.
    method_type: Literal["supervised", "lora"] | None = None
    task: Task | None = None
    policy: dict[str, Any] | None = None
    instance_type: InstanceTypeName | None = None
    max_cost_usd: MaxCostUsd | None = None
    model_parameters: ModelParameters | None = None
    dataset_tokens: DatasetTokens | None = None
    priority: Priority | None = None
    max_attempts: MaxAttempts | None = None
    max_preemptions: MaxPreemptions | None = None
    checkpoint: CheckpointPolicy | None = None


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
            # 422, as an unknown field is on every route.
            raise Unprocessable(f"unknown hyperparameter {name!r}", code="unknown_parameter", param=param)
    return out


_SPEC_PARAMS = {"epochs": "n_epochs", "name": "suffix", "base_model": "model"}


def _spec_error(exc: ValidationError) -> RequestValidationError:
    """The spec's own validation, its fields named as the caller named them, so it is answered
    as every invalid request is (`api.errors.translate`)."""
    return RequestValidationError(
        [{**e, "loc": tuple(_SPEC_PARAMS.get(str(p), p) for p in e.get("loc", ()))} for e in exc.errors()]
    )


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
        # Without a suffix the job is named for its model, short (`ft:Llama-3.1-8B`), not its URI.
        "name": req.suffix or f"ft:{short_name(req.model)}",
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
        "max_preemptions",
        "checkpoint",
    ):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    try:
        return JobSpec.model_validate(body)
    except ValidationError as exc:
        raise _spec_error(exc) from None
