"""The per-worker training loop that Ray Train runs on every worker of an attempt.

One function, :func:`train_loop_per_worker`, receives a plain dict (see :class:`LoopConfig`) and
runs a Hugging Face ``Trainer`` inside the process group Ray Train set up. Around the Trainer:

- the base model comes from a hub id, a local directory, or an ``s3://`` / ``file://`` directory
  that is downloaded to a local temp dir first (:mod:`.model`);
- JSONL data is read from object storage and tokenised on each worker (:mod:`.data`);
- :class:`~.callbacks.PlatformCallback` streams progress, agrees on a stop and hands each
  checkpoint to Ray Train, which gives it back through ``ray.train.get_checkpoint()`` on resume;
- at the end rank 0 writes the final model (LoRA merged into the base) and tokenizer into the
  store, loadable with ``AutoModel*.from_pretrained`` after download.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import ray
import ray.train
import torch

from trainyard.platform.spec import JobSpec
from trainyard.platform.states import JobPhase
from trainyard.platform.storage import download_uri_dir
from trainyard.workers.control import MESSAGE, RunControlHandle
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.training.callbacks import PlatformCallback, StopSignal, report_phase
from trainyard.workers.training.data import label_mapping, read_jsonl, tokenize_records
from trainyard.workers.training.model import (
    bf16_ok,
    load_model,
    load_tokenizer,
    resolve_model_source,
    save_final_model,
)


class LoopConfig(TypedDict, total=False):
    """What :func:`train_loop_per_worker` reads from its config dict."""

    spec: dict[str, Any]  # JobSpec.model_dump(mode="json"), hyperparameter overrides already applied
    store_uri: str  # the platform's object store root
    final_prefix: str | None  # where rank 0 writes the final model, relative to store_uri
    control: RunControlHandle | None
    progress_interval_s: float
    stop_poll_interval_s: float
    log_every_steps: int
    tags: dict[str, Any]  # merged into every event (a sweep tags events with the trial id)
    resume_from: str  # a recorded checkpoint's store URI, when Ray Train has none of this run's
    plan: dict[str, Any]  # the job's plan: the memory plan (micro-batch, accumulation, checkpointing)


class BatchPlan(NamedTuple):
    """How each worker forms its batch: what the estimator found fits the device."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool


def batch_plan(spec: JobSpec, plan: Mapping[str, Any] | None) -> BatchPlan:
    """The plan's micro-batch, accumulation and checkpointing, when they make the batch the spec
    asks for (micro-batch x accumulation = batch_size x gradient_accumulation_steps); otherwise the
    spec's own (a job planned before plans carried them, or a sweep trial that changes the batch)."""
    hp = spec.hyperparameters
    asked = BatchPlan(hp.batch_size, hp.gradient_accumulation_steps, False)
    plan = plan or {}
    micro, accumulation = plan.get("micro_batch_size"), plan.get("gradient_accumulation_steps")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (micro, accumulation)):
        return asked
    assert isinstance(micro, int) and isinstance(accumulation, int)
    if micro * accumulation != hp.batch_size * hp.gradient_accumulation_steps:
        return asked
    return BatchPlan(micro, accumulation, plan.get("gradient_checkpointing") is True)


def _checkpointing(arguments: type, on: bool) -> dict[str, Any]:
    """Activation (gradient) checkpointing, under the name this transformers release uses (later
    5.x releases renamed ``gradient_checkpointing`` to ``activation_checkpointing``)."""
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in getattr(arguments, "__dataclass_fields__", {})
        else "gradient_checkpointing"
    )
    # Non-reentrant checkpointing works with frozen inputs (a LoRA base) and under DDP.
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def training_arguments(
    spec: JobSpec,
    plan: Mapping[str, Any] | None,
    output_dir: Path,
    *,
    has_eval: bool,
    log_every: int,
    use_cpu: bool | None = None,
) -> Any:
    """The Hugging Face ``TrainingArguments`` of a run: the spec's hyperparameters, batched as the
    plan says. ``use_cpu``: None decides by whether CUDA is there."""
    from transformers import TrainingArguments

    hp = spec.hyperparameters
    batch = batch_plan(spec, plan)
    every = spec.checkpoint.every_steps
    on_cuda = torch.cuda.is_available() if use_cpu is None else not use_cpu
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch.micro_batch_size,
        per_device_eval_batch_size=batch.micro_batch_size,
        gradient_accumulation_steps=batch.gradient_accumulation_steps,
        **_checkpointing(TrainingArguments, batch.gradient_checkpointing),
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_steps,
        num_train_epochs=hp.epochs if hp.epochs is not None else 1.0,
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        seed=hp.seed,
        data_seed=hp.seed,
        save_strategy="steps",
        save_steps=every,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=every if has_eval else None,
        logging_strategy="steps",
        logging_steps=max(1, min(log_every, every)),
        # Global, non-padding token count, gathered across ranks and restored on resume.
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_cuda,
        bf16=bf16_ok(),
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker function. See :class:`LoopConfig` for the keys of ``config``.

    Returns a :class:`TrainingOutcome` as a dict (steps, tokens, stop, final model URI); Ray Train
    keeps rank 0's.
    """
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    spec = JobSpec.model_validate(config["spec"])
    hp = spec.hyperparameters
    control = config.get("control")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    work = Path(tempfile.mkdtemp(prefix=f"trainyard-rank{rank}-"))
    # The workers are up: from here to the first step, the model (and the data) load.
    report_phase(control, rank, JobPhase.LOADING_MODEL, config.get("tags"))
    try:
        source = resolve_model_source(spec.base_model, work / "base")
        tokenizer = load_tokenizer(source)
        train_records = read_jsonl(spec.training_file)
        eval_records = read_jsonl(spec.validation_file) if spec.validation_file else None
        labels = None
        if spec.task == "sequence_classification":
            labels = label_mapping(train_records + (eval_records or []), hp.num_labels or 2)
        train_ds = tokenize_records(train_records, tokenizer, hp.seq_len, spec.task, labels)
        eval_ds = (
            tokenize_records(eval_records, tokenizer, hp.seq_len, spec.task, labels) if eval_records else None
        )
        model = load_model(spec, source, tokenizer, labels)

        if spec.task == "causal_lm":
            collator: Any = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
        else:
            collator = DataCollatorWithPadding(tokenizer=tokenizer)

        stop = StopSignal(control, rank, world, float(config.get("stop_poll_interval_s", 2.0)))
        callback = PlatformCallback(
            rank=rank,
            control=control,
            stop=stop,
            progress_interval_s=float(config.get("progress_interval_s", 2.0)),
            tags=config.get("tags"),
        )
        if control is not None:
            # Where each rank runs goes into the attempt's events: which nodes a pool's job used,
            # and which node a preemption took away.
            node = ray.get_runtime_context().get_node_id()
            control.report.remote(
                {
                    "type": MESSAGE,
                    "level": "info",
                    "message": f"rank {rank} runs on Ray node {node}",
                    "data": {"rank": rank, "node_id": node},
                }
            )
        trainer = Trainer(
            model=model,
            args=training_arguments(
                spec,
                config.get("plan"),
                work / "hf",
                has_eval=eval_ds is not None,
                log_every=int(config.get("log_every_steps", 5)),
            ),
            data_collator=collator,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        # The platform streams its own progress; the console printers would only fill worker logs.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer = prepare_trainer(trainer)

        checkpoint = ray.train.get_checkpoint()
        resume_from = config.get("resume_from")
        if checkpoint is not None:
            # as_directory downloads remote checkpoints to a local temp dir (and uses local ones in
            # place); the Trainer reads weights, optimizer, scheduler, RNG and trainer state from it.
            with checkpoint.as_directory() as resume_dir:
                trainer.train(resume_from_checkpoint=resume_dir)
        elif resume_from:
            # Every rank reads the whole directory: rank 0's weights and state, its own RNG file.
            resume_dir = download_uri_dir(resume_from, work / "resume")
            trainer.train(resume_from_checkpoint=str(resume_dir))
        else:
            trainer.train()

        state = trainer.state
        final_uri = None
        final_prefix = config.get("final_prefix")
        # A stopped run leaves its checkpoint, not a model; one that lost its lease leaves nothing.
        if rank == 0 and not callback.stopped and final_prefix:
            callback.set_phase(JobPhase.SAVING)
            final_uri = save_final_model(
                trainer.model, tokenizer, work / "final", config["store_uri"], final_prefix
            )
            callback.send({"type": MESSAGE, "level": "info", "message": f"final model saved to {final_uri}"})
        tokens = int(state.num_input_tokens_seen or 0)
        outcome = TrainingOutcome(
            final_model_uri=final_uri,
            metrics=callback.metrics(state),
            steps=int(state.global_step),
            start_step=callback.start_step or 0,
            total_steps=int(state.max_steps),
            tokens_trained=tokens,
            tokens_this_attempt=tokens - callback.start_tokens,
            stopped_early=callback.stopped,
            stop_reason=stop.reason,
            tokens_per_second=callback.average_tokens_per_second,
        )
        # Ray Train 2.60 hands rank 0's return value to fit()'s Result.return_value; Result.metrics
        # only holds the metrics of the latest checkpoint, so the outcome travels this way, as a
        # plain dict (the launcher adds the checkpoints Ray Train kept).
        return outcome.to_dict()
    finally:
        shutil.rmtree(work, ignore_errors=True)
