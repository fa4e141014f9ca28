"""Memory plans that fit: micro-batch x accumulation keeps the asked-for batch, and the worker's
training arguments are exactly the plan's."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import shipped_catalog

from trainyard.platform.deployment import Deployment
from trainyard.platform.planning import Planned, Planner, memory_plan
from trainyard.platform.scheduling import ModelInfo, choose, estimate, estimate_all
from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.scheduling.profiles import micro_batch_sizes
from trainyard.platform.spec import JobSpec
from trainyard.workers.training.loop import batch_plan, training_arguments

LLAMA_70B = ModelInfo(
    parameters=70_553_706_496, layers=80, hidden_size=8192, vocab_size=128256, model_type="llama"
)
TOKENS = 100_000_000
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def lora_70b(**overrides: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "name": "llama-70b-lora",
        "base_model": "meta-llama/Meta-Llama-3-70B",
        "training_file": "s3://b/train.jsonl",
        "method": "lora",
        "hyperparameters": {"batch_size": 8, "seq_len": 2048},
    }
    return JobSpec(**(fields | overrides))


def args_for(spec: JobSpec, plan: dict[str, Any], tmp_path: Path) -> Any:
    return training_arguments(spec, plan, tmp_path / "hf", has_eval=False, log_every=5, use_cpu=True)


def checkpointing(args: Any) -> bool:
    # transformers renamed gradient_checkpointing to activation_checkpointing within 5.x.
    return bool(getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing)


def test_micro_batches_divide_the_batch() -> None:
    assert micro_batch_sizes(8) == [8, 4, 2, 1]
    assert micro_batch_sizes(12) == [12, 6, 4, 3, 2, 1]
    assert micro_batch_sizes(1) == [1]


def test_70b_lora_fits_8_x_32_gb_with_micro_batch_1_and_accumulation_8(tmp_path: Path) -> None:
    # 8 x 2048 tokens per device would need ~51 GB of checkpointed activations and logits on top of
    # the sharded bf16 base; one sequence at a time, eight accumulated, needs ~27 GB of 30.4 usable.
    catalog = shipped_catalog()
    spec = lora_70b()
    e = estimate(spec, catalog["v6e-8"], catalog, LLAMA_70B, TOKENS, now=NOW)
    assert e.fits and e.memory.capacity_gb == pytest.approx(30.4)
    assert (e.strategy, e.gradient_checkpointing) == ("fsdp", True)
    assert (e.micro_batch_size, e.gradient_accumulation_steps) == (1, 8)
    assert e.memory.total_gb < e.memory.capacity_gb
    # The effective batch is the one asked for: a step still trains 8 sequences per worker.
    assert e.tokens == TOKENS and e.steps == math.ceil(TOKENS / (8 * 2048 * 8))
    assert "micro-batch 1 x 8" in e.reason

    args = args_for(spec, memory_plan(e), tmp_path)
    assert args.per_device_train_batch_size == e.micro_batch_size == 1
    assert args.gradient_accumulation_steps == e.gradient_accumulation_steps == 8
    assert checkpointing(args) is True


def test_the_planned_job_trains_with_its_plan(tmp_path: Path) -> None:
    # Through the planner, as a submitted job is planned: a 70B LoRA on 8 x A100-40GB.
    catalog = shipped_catalog()
    planner = Planner(Deployment(catalog=catalog, pools=(Pool("p4d.24xlarge"),)))
    spec = lora_70b(instance_type="p4d.24xlarge", policy={"spot": "never"})
    options = estimate_all(spec, catalog, LLAMA_70B, TOKENS, now=NOW)
    decision = choose(spec, options, available=planner.available)
    plan = planner.plan_dict(Planned(decision, options, None, LLAMA_70B, TOKENS, "dataset_tokens", spec))
    assert plan["micro_batch_size"] * plan["gradient_accumulation_steps"] == 8
    assert plan["micro_batch_size"] < 8  # the asked-for micro-batch does not fit 40 GB

    args = args_for(spec, plan, tmp_path)
    assert args.per_device_train_batch_size == plan["micro_batch_size"]
    assert args.per_device_eval_batch_size == plan["micro_batch_size"]
    assert args.gradient_accumulation_steps == plan["gradient_accumulation_steps"]
    assert checkpointing(args) is plan["gradient_checkpointing"]


def test_a_plan_that_does_not_make_the_batch_is_not_used(tmp_path: Path) -> None:
    spec = lora_70b(hyperparameters={"batch_size": 4, "gradient_accumulation_steps": 2})
    assert batch_plan(spec, {"micro_batch_size": 2, "gradient_accumulation_steps": 4}) == (2, 4, False)
    # A sweep trial that changes the batch, an old plan without the fields, a hand-edited value:
    # the spec's own batch.
    for plan in (
        {"micro_batch_size": 1, "gradient_accumulation_steps": 4},
        {},
        None,
        {"micro_batch_size": True, "gradient_accumulation_steps": 8},
        {"micro_batch_size": "1", "gradient_accumulation_steps": 8},
    ):
        assert batch_plan(spec, plan) == (4, 2, False)
    args = args_for(spec, {}, tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert checkpointing(args) is False
