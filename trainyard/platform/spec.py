"""The job specification: what a user asks for, shared by the API, the scheduler and the workers.

One pydantic model validates every way a job arrives (HTTP body, SDK, CLI file), so the limits
below are the platform's limits, not the API's.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

Task = Literal["causal_lm", "sequence_classification"]
Method = Literal["full", "lora"]
Objective = Literal["cheapest", "fastest", "deadline", "budget"]
SpotChoice = Literal["never", "auto", "always"]

MAX_METADATA_PAIRS = 16


def _check_uri(value: str) -> str:
    # A URI or a path: reject control characters and traversal up front; storage re-checks keys.
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value


# The pattern says in the schema what `_check_uri` refuses.
UriStr = Annotated[
    str,
    Field(min_length=1, max_length=1024, json_schema_extra={"pattern": "^[^\\u0000-\\u001f]*$"}),
    AfterValidator(_check_uri),
]
# Limits shared by every body that carries these fields (JobSpec, the OpenAI fine-tuning create).
InstanceTypeName = Annotated[str, Field(min_length=1, max_length=64)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
MaxAttempts = Annotated[int, Field(ge=1, le=20)]
MaxPreemptions = Annotated[int, Field(ge=0, le=1000)]
DEFAULT_MAX_PREEMPTIONS = 10
ModelParameters = Annotated[int, Field(gt=0, le=10**13)]
DatasetTokens = Annotated[int, Field(gt=0, le=10**15)]
MaxCostUsd = Annotated[float, Field(gt=0, le=10_000_000)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Metadata = dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=512)]]
# The pair limit is checked with the spec (`JobSpec._limits`); the schema states it as well.
METADATA_SCHEMA: JsonDict = {"maxProperties": MAX_METADATA_PAIRS}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Hyperparameters(_Strict):
    epochs: float | None = Field(default=None, gt=0, le=1000)
    max_steps: int | None = Field(default=None, gt=0, le=10_000_000)
    batch_size: int = Field(default=8, ge=1, le=65_536)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0)
    seq_len: int = Field(default=512, ge=8, le=1_048_576)
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    seed: Seed = 0
    num_labels: int | None = Field(default=None, ge=2, le=100_000)
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_length(self) -> Hyperparameters:
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1.0
        return self


# `policy.deadline` may also say how long from now: `+48h` or `in 2h` (m, h, d or w), resolved to
# the time that long after the spec is read (the CLI resolves a job file's the same way).
RELATIVE_DEADLINE = re.compile(r"^(?:\+|in\s+)\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)$", re.IGNORECASE)
_DEADLINE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE_HELP = "write +<number><m|h|d|w> or in <number><m|h|d|w> (+48h, in 2h), or an RFC 3339 time"


def _looks_relative(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("+", "in "))


def relative_deadline(text: str, now: datetime | None = None) -> datetime:
    """The time `text` (`+48h`, `in 2h`) names from `now`, to the second; ValueError when it is
    not spelled so, or is not in the future."""
    match = RELATIVE_DEADLINE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a deadline: {_RELATIVE_HELP}")
    try:
        span = timedelta(**{_DEADLINE_UNITS[match.group(2).lower()]: float(match.group(1))})
        at = ((now or datetime.now(UTC)) + span).replace(microsecond=0)
    except OverflowError:
        raise ValueError(f"{text!r} is further off than a calendar goes") from None
    if span <= timedelta(0):
        raise ValueError(f"{text!r} is not in the future: {_RELATIVE_HELP}")
    return at


# What the schema says `deadline` takes: an RFC 3339 time, or how long from now.
_DEADLINE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "pattern": "^(\\+|in\\s+)\\s*\\d+(\\.\\d+)?\\s*[mhdwMHDW]$"},
            {"type": "null"},
        ],
        "description": "an RFC 3339 time with a timezone, or how long from now: +48h, in 2h (m, h, d, w)",
    }
)


class Policy(_Strict):
    objective: Objective = "cheapest"
    deadline: Annotated[datetime | None, _DEADLINE_SCHEMA] = None
    max_cost_usd: MaxCostUsd | None = None
    spot: SpotChoice = "auto"
    allowed_accelerators: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=64
    )

    # The relative spelling it was given (`in 2h`), so that a retry of the same request hashes
    # the same (`jobs.request_hash`) although it resolves to a later time.
    _deadline_text: str | None = PrivateAttr(default=None)

    @field_validator("deadline", mode="before")
    @classmethod
    def _resolve_relative(cls, value: Any) -> Any:
        return relative_deadline(value) if _looks_relative(value) else value

    @model_validator(mode="wrap")
    @classmethod
    def _keep_relative(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Policy:
        policy: Policy = handler(data)
        raw = data.get("deadline") if isinstance(data, dict) else None
        if _looks_relative(raw):
            policy._deadline_text = " ".join(str(raw).lower().split())
        return policy

    @property
    def deadline_as_asked(self) -> str | None:
        """The relative deadline as the request spelled it (`in 2h`); None for an absolute one."""
        return self._deadline_text

    @model_validator(mode="after")
    def _objective_needs(self) -> Policy:
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline must carry a timezone (RFC 3339)")
        if self.objective == "deadline" and self.deadline is None:
            raise ValueError("objective 'deadline' needs policy.deadline")
        if self.objective == "budget" and self.max_cost_usd is None:
            raise ValueError("objective 'budget' needs policy.max_cost_usd")
        return self


class CheckpointPolicy(_Strict):
    every_steps: int = Field(default=100, ge=1, le=10_000_000)
    keep: int = Field(default=3, ge=1, le=1000)


MAX_TRIALS = 1024


class Sweep(_Strict):
    """A Ray Tune sweep whose trials are training runs; the best trial becomes the final model.

    Every combination of `param_space` is a trial, `num_samples` times over; up to
    `max_concurrent_trials` run at once, each on an instance of the job's type (so the sweep
    holds that many instances, and is estimated, budgeted and billed for them)."""

    param_space: dict[str, list[float | int | str]] = Field(min_length=1, max_length=16)
    num_samples: int = Field(default=1, ge=1, le=256)
    metric: str = Field(default="eval_loss", min_length=1, max_length=64)
    mode: Literal["min", "max"] = "min"
    asha: bool = False
    max_concurrent_trials: int = Field(default=1, ge=1, le=256)

    @model_validator(mode="after")
    def _trials(self) -> Sweep:
        if any(not values for values in self.param_space.values()):
            raise ValueError("every sweep.param_space entry needs at least one value")
        if self.trials > MAX_TRIALS:
            raise ValueError(f"the sweep has {self.trials} trials; the most is {MAX_TRIALS}")
        return self

    @property
    def trials(self) -> int:
        """How many trials the sweep runs: every combination, num_samples times."""
        return math.prod(len(v) for v in self.param_space.values()) * self.num_samples

    @property
    def concurrency(self) -> int:
        """How many trials run at once (never more than there are)."""
        return min(self.max_concurrent_trials, self.trials)

    def overrides(self) -> list[dict[str, float | int | str]]:
        """Each trial's hyperparameters over the job's, in Tune's grid order, num_samples times."""
        keys = list(self.param_space)
        grid = [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.param_space.values())
        ]
        return grid * self.num_samples


class JobSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    base_model: UriStr
    task: Task = "causal_lm"
    method: Method = "full"
    training_file: UriStr
    validation_file: UriStr | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    policy: Policy = Field(default_factory=Policy)
    instance_type: InstanceTypeName | None = None
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    priority: Priority = 0
    max_attempts: MaxAttempts = 3
    # Spot interruptions the job survives, apart from max_attempts (failures, crashes, lost workers).
    max_preemptions: MaxPreemptions = DEFAULT_MAX_PREEMPTIONS
    metadata: Metadata = Field(default_factory=dict, json_schema_extra=METADATA_SCHEMA)
    # Estimation hints for when the model config or the dataset cannot be read at submit time.
    model_parameters: ModelParameters | None = None
    dataset_tokens: DatasetTokens | None = None
    sweep: Sweep | None = None

    @model_validator(mode="after")
    def _limits(self) -> JobSpec:
        if len(self.metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        if self.task == "sequence_classification" and self.hyperparameters.num_labels is None:
            self.hyperparameters.num_labels = 2
        return self
