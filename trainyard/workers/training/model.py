"""The model on a worker: where the base model comes from, loading it (LoRA on top when asked),
its tokenizer, and the final model rank 0 writes into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainyard.platform.spec import JobSpec


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


def bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_model(spec: JobSpec, source: str, tokenizer: Any, labels: dict[Any, int] | None) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    hp = spec.hyperparameters
    # Full fine-tuning keeps fp32 master weights (bf16 autocast does the speed-up); LoRA freezes
    # the base, so a bf16 base halves memory at no cost to the fp32 adapter.
    dtype = torch.bfloat16 if spec.method == "lora" and bf16_ok() else torch.float32
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
