"""The per-worker training loop that Ray Train runs on every worker of an attempt.

One function, :func:`train_loop_per_worker`, receives a plain dict (see :class:`LoopConfig`) and
runs a Hugging Face ``Trainer`` inside the process group Ray Train set up. Around the Trainer:

- the base model comes from a hub id, a local directory, or an ``s3://`` / ``file://`` directory
  that is downloaded to a local temp dir first;
- JSONL data is read from object storage and tokenised on each worker (datasets are small next to
  the model, and tokenising locally avoids shipping tensors through Ray's object store);
- each Trainer checkpoint is handed to ``ray.train.report`` under a step-numbered directory name,
  so Ray Train persists it in the job's store and hands it back through
  ``ray.train.get_checkpoint()`` when the same run is started again;
- rank 0 streams progress to the ``RunControl`` actor at most every ``progress_interval_s``
  without any per-step ``ray.train.report`` barrier;
- rank 0 polls ``RunControl.stop_requested()`` without blocking and broadcasts the decision to
  every rank each optimizer step, so all ranks save one last checkpoint and stop on the same step;
- at the end rank 0 writes the final model (LoRA merged into the base) and tokenizer into the
  store, loadable with ``AutoModel*.from_pretrained`` after download.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import ray
import ray.train
import torch
import torch.distributed as dist
from transformers import TrainerCallback

from trainyard.platform.files import record_format, render_record
from trainyard.platform.spec import JobSpec

logger = logging.getLogger(__name__)

CHECKPOINT_DIR_PREFIX = "checkpoint_"


class LoopConfig(TypedDict, total=False):
    """What :func:`train_loop_per_worker` reads from its config dict."""

    spec: dict[str, Any]  # JobSpec.model_dump(mode="json"), hyperparameter overrides already applied
    store_uri: str  # the platform's object store root
    final_prefix: str | None  # where rank 0 writes the final model, relative to store_uri
    control: Any  # RunControl actor handle, or None
    progress_interval_s: float
    stop_poll_interval_s: float
    log_every_steps: int
    tags: dict[str, Any]  # merged into every event (a sweep tags events with the trial id)


def checkpoint_dir_name(step: int) -> str:
    """The directory name a step's checkpoint gets in the store (sortable by name)."""
    return f"{CHECKPOINT_DIR_PREFIX}{step:09d}"


# ---------------------------------------------------------------------------------------------
# Inputs: model and data
# ---------------------------------------------------------------------------------------------


def is_remote_uri(value: str) -> bool:
    return value.startswith(("s3://", "file://"))


def resolve_model_source(base_model: str, dest: Path) -> str:
    """Return something ``from_pretrained`` accepts: a local directory or a hub id.

    ``s3://`` and ``file://`` directories are downloaded into ``dest``; a local directory is used
    in place; anything else is taken as a hub id, which ``from_pretrained`` resolves itself
    (and refuses under ``HF_HUB_OFFLINE=1`` unless it is cached).
    """
    if is_remote_uri(base_model):
        from trainyard.platform.storage import download_uri_dir

        return str(download_uri_dir(base_model, dest))
    return base_model


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """Read JSONL records from ``s3://``, ``file://`` or a local path; blank lines are skipped."""
    from trainyard.platform.storage import read_uri

    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(read_uri(uri).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{uri}: line {lineno} is not JSON: {exc.msg}") from exc
        try:
            record_format(record)  # text, prompt/completion or chat messages
        except ValueError as exc:
            raise ValueError(f"{uri}: line {lineno}: {exc}") from None
        records.append(record)
    if not records:
        raise ValueError(f"{uri}: no records")
    return records


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._items[i]


def label_mapping(records: list[dict[str, Any]], num_labels: int) -> dict[Any, int]:
    """Map the labels found in the data to class ids.

    Integer labels are class ids already; string labels get ids in sorted order, which every
    worker computes identically from the same file.
    """
    labels = {r.get("label") for r in records}
    if None in labels:
        raise ValueError("every classification record needs a 'label'")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        bad = sorted(x for x in labels if not 0 <= x < num_labels)
        if bad:
            raise ValueError(f"labels {bad[:5]} are outside 0..{num_labels - 1} (num_labels={num_labels})")
        return {i: i for i in range(num_labels)}
    if all(isinstance(x, str) for x in labels):
        names = sorted(labels)
        if len(names) > num_labels:
            raise ValueError(f"{len(names)} distinct labels but num_labels={num_labels}")
        return {name: i for i, name in enumerate(names)}
    raise ValueError("labels must be all integers or all strings")


def tokenize_records(
    records: list[dict[str, Any]],
    tokenizer: Any,
    seq_len: int,
    task: str,
    labels: dict[Any, int] | None = None,
) -> _ListDataset:
    texts = [render_record(r, tokenizer) for r in records]
    enc = tokenizer(texts, truncation=True, max_length=seq_len)
    items: list[dict[str, Any]] = []
    for i, ids in enumerate(enc["input_ids"]):
        if not ids:
            continue
        item: dict[str, Any] = {"input_ids": ids, "attention_mask": enc["attention_mask"][i]}
        if task == "sequence_classification":
            assert labels is not None
            item["labels"] = labels[records[i]["label"]]
        items.append(item)
    return _ListDataset(items)


def _bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_model(spec: JobSpec, source: str, tokenizer: Any, labels: dict[Any, int] | None) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    hp = spec.hyperparameters
    # Full fine-tuning keeps fp32 master weights (bf16 autocast does the speed-up); LoRA freezes
    # the base, so a bf16 base halves memory at no cost to the fp32 adapter.
    dtype = torch.bfloat16 if spec.method == "lora" and _bf16_ok() else torch.float32
    if spec.task == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    else:
        num_labels = hp.num_labels or 2
        kwargs: dict[str, Any] = {"num_labels": num_labels}
        if labels and any(isinstance(k, str) for k in labels):
            kwargs["id2label"] = {i: str(name) for name, i in labels.items()}
            kwargs["label2id"] = {str(name): i for name, i in labels.items()}
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype, **kwargs)
    # Padding-aware heads (GPT-2 classification picks the last non-pad token) need the pad id.
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if spec.method == "lora":
        model = apply_lora(model, spec)
    return model


def apply_lora(model: Any, spec: JobSpec) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    from transformers.pytorch_utils import Conv1D

    hp = spec.hyperparameters
    # PEFT knows the attention projections of common architectures; for anything else, adapt
    # every linear layer rather than fail.
    known = getattr(model.config, "model_type", None) in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    # GPT-2-style Conv1D layers store weights transposed; PEFT fixes this up with a warning otherwise.
    conv1d = any(isinstance(m, Conv1D) for m in model.modules())
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM if spec.task == "causal_lm" else TaskType.SEQ_CLS,
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=None if known else "all-linear",
        fan_in_fan_out=conv1d,
    )
    return get_peft_model(model, config)


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    # Many causal LMs ship without a pad token; batching needs one, and EOS is the usual stand-in.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Stop signal and progress
# ---------------------------------------------------------------------------------------------


class StopSignal:
    """Rank 0 asks RunControl without blocking; every rank learns the answer on the same step.

    ``stop_requested`` is an actor call, so rank 0 keeps one call in flight and checks it with a
    zero-timeout ``ray.wait`` each step, issuing a new one every ``poll_interval_s``. The decision
    is then broadcast as one int64 over a gloo group: that costs far less than a training step,
    works when the default group is NCCL, and guarantees no rank stops a step before another
    (which would hang the next collective).
    """

    def __init__(self, control: Any, rank: int, world_size: int, poll_interval_s: float) -> None:
        self._control = control
        self._rank = rank
        self._interval = poll_interval_s
        self._pending: Any = None
        self._last_poll = -math.inf
        self.reason: str | None = None
        self._group: Any = None
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def check_now(self, timeout_s: float = 10.0) -> None:
        """A blocking poll, for the start of training, so an early request stops at step one."""
        if self._rank != 0 or self._control is None:
            return
        try:
            self.reason = ray.get(self._control.stop_requested.remote(), timeout=timeout_s) or self.reason
        except Exception:  # a missing control actor must not fail training
            logger.warning("RunControl did not answer stop_requested", exc_info=True)
        self._last_poll = time.monotonic()

    def _refresh(self) -> None:
        if self._control is None or self.reason is not None:
            return
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return
            try:
                self.reason = ray.get(self._pending) or None
            except Exception:
                logger.warning("RunControl did not answer stop_requested", exc_info=True)
            self._pending = None
            self._last_poll = time.monotonic()
        elif time.monotonic() - self._last_poll >= self._interval:
            self._pending = self._control.stop_requested.remote()

    def should_stop(self) -> bool:
        """Call on every rank at the same point of every step."""
        flag = 0
        if self._rank == 0:
            self._refresh()
            flag = int(self.reason is not None)
        if self._group is not None:
            t = torch.tensor([flag], dtype=torch.int64)
            dist.broadcast(t, src=0, group=self._group)
            flag = int(t.item())
        return bool(flag)


class PlatformCallback(TrainerCallback):
    """Progress to RunControl (rank 0), stop on request (all ranks), checkpoints to Ray Train."""

    def __init__(
        self,
        *,
        rank: int,
        control: Any,
        stop: StopSignal,
        progress_interval_s: float,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self._tags = dict(tags or {})
        self._rank = rank
        self._control = control
        self._stop = stop
        self._interval = progress_interval_s
        self._last_send = -math.inf
        self._last_tokens = 0
        self._last_time = time.monotonic()
        self.start_step: int | None = None
        self.start_tokens = 0
        self.stopped = False
        self.latest: dict[str, float] = {}

    # -- progress -------------------------------------------------------------------------------

    def _send(self, event: dict[str, Any]) -> None:
        if self._rank != 0 or self._control is None:
            return
        try:
            self._control.report.remote({**event, **self._tags})  # fire and forget: never wait on the mailbox
        except Exception:
            logger.warning("could not reach RunControl", exc_info=True)

    def _progress(self, state: Any) -> None:
        now = time.monotonic()
        tokens = int(state.num_input_tokens_seen or 0)
        elapsed = max(now - self._last_time, 1e-9)
        self._send(
            {
                "type": "progress",
                "step": state.global_step,
                "total_steps": state.max_steps,
                "tokens_seen": tokens,
                "loss": self.latest.get("loss"),
                "tokens_per_second": (tokens - self._last_tokens) / elapsed,
                "epoch": state.epoch,
            }
        )
        self._last_send, self._last_tokens, self._last_time = now, tokens, now

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # After a resume the Trainer has already loaded trainer_state.json, so this is the step the
        # attempt continues from.
        self.start_step = state.global_step
        self.start_tokens = self._last_tokens = int(state.num_input_tokens_seen or 0)
        self._last_time = time.monotonic()
        self._stop.check_now()
        if self._rank == 0 and state.global_step > 0:
            self._send(
                {"type": "message", "level": "info", "message": f"resumed at step {state.global_step}"}
            )

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.latest[key] = float(value)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._rank == 0 and time.monotonic() - self._last_send >= self._interval:
            self._progress(state)
        if not self.stopped and self._stop.should_stop():
            # Every rank reaches this on the same step; the save below runs before the loop exits.
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._progress(state)

    # -- checkpoints ----------------------------------------------------------------------------

    def metrics(self, state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": state.global_step,
            "epoch": float(state.epoch or 0.0),
            "tokens_seen": int(state.num_input_tokens_seen or 0),
        }
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "eval_accuracy"):
            if key in self.latest:
                out[key] = self.latest[key]
        return out

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from ray.train import Checkpoint

        # Each rank hands over what it wrote (rank 0: weights, optimizer, trainer state; others:
        # their RNG state); Ray Train merges them into one directory in the store.
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint = Checkpoint.from_directory(str(local)) if local.is_dir() else None
        ray.train.report(
            self.metrics(state),
            checkpoint=checkpoint,
            checkpoint_dir_name=checkpoint_dir_name(state.global_step),
            # Uploaded is enough: keeping local copies would fill the worker's disk.
            delete_local_checkpoint_after_upload=True,
        )


# ---------------------------------------------------------------------------------------------
# Final model
# ---------------------------------------------------------------------------------------------


def save_final_model(model: Any, tokenizer: Any, local_dir: Path, store_uri: str, prefix: str) -> str:
    """Write a ``from_pretrained``-loadable model into the store; returns its URI."""
    from trainyard.platform.storage import open_store

    if hasattr(model, "merge_and_unload"):
        # A merged model loads with plain transformers, without PEFT or the base model at hand.
        model = model.merge_and_unload()
    model = model.to(torch.float32) if next(model.parameters()).dtype == torch.bfloat16 else model
    local_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(local_dir)
    tokenizer.save_pretrained(local_dir)
    store = open_store(store_uri)
    store.upload_dir(prefix, local_dir)
    return store.uri_for(prefix)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _training_arguments(spec: JobSpec, output_dir: Path, has_eval: bool, log_every: int) -> Any:
    from transformers import TrainingArguments

    hp = spec.hyperparameters
    every = spec.checkpoint.every_steps
    on_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
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
        bf16=_bf16_ok(),
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker function. See :class:`LoopConfig` for the keys of ``config``.

    Returns the outcome (steps, tokens, stop, final model URI); Ray Train keeps rank 0's.
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
        trainer = Trainer(
            model=model,
            args=_training_arguments(
                spec, work / "hf", eval_ds is not None, int(config.get("log_every_steps", 5))
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
        if checkpoint is not None:
            # as_directory downloads remote checkpoints to a local temp dir (and uses local ones in
            # place); the Trainer reads weights, optimizer, scheduler, RNG and trainer state from it.
            with checkpoint.as_directory() as resume_dir:
                trainer.train(resume_from_checkpoint=resume_dir)
        else:
            trainer.train()

        state = trainer.state
        final_uri = ""
        final_prefix = config.get("final_prefix")
        if rank == 0 and not callback.stopped and final_prefix:
            final_uri = save_final_model(
                trainer.model, tokenizer, work / "final", config["store_uri"], final_prefix
            )
            callback._send(
                {"type": "message", "level": "info", "message": f"final model saved to {final_uri}"}
            )
        # Ray Train 2.60 hands rank 0's return value to fit()'s Result.return_value; Result.metrics
        # only holds the metrics of the latest checkpoint, so the outcome travels this way.
        return {
            **callback.metrics(state),
            "start_step": callback.start_step or 0,
            "start_tokens": callback.start_tokens,
            "total_steps": state.max_steps,
            "stopped": callback.stopped,
            "stop_reason": stop.reason or "",
            "final_model_uri": final_uri,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
